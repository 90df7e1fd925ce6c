// Live events: a selector box, pause/resume, capped rows rendered in batches.
import { h, clear, time, short, pretty } from './dom.js';

const FLUSH_MS = 100;
const MAX_FLUSH_MS = 1000;

class EventsPage extends HTMLElement {
  attach(app) {
    this.app = app;
    this.cap = app.rows;
    this.pending = [];       // received, not yet drawn (never more than the cap)
    this.held = [];          // received while paused (never more than the cap)
    this.byId = new Map();   // id -> drawn row, for causal links
    this.received = 0;
    this.paused = false;
    this.scheduled = false;
    this.lastFlush = 0;
    this.interval = FLUSH_MS;
    this.filter = '';
    this.render();
    this.connect();
  }

  render() {
    clear(this);
    this.input = h('input', { id: 'selector', type: 'text', spellcheck: 'false',
      placeholder: 'e.g. file.*  or  type=file.created and data.path=*.txt',
      'aria-describedby': 'selector-help selector-error' });
    this.errorBox = h('div', { id: 'selector-error', class: 'error', role: 'alert' });
    this.pauseButton = h('button', { type: 'button', class: 'secondary', id: 'pause',
      'aria-pressed': 'false', onclick: () => this.togglePause() }, 'Pause');
    this.statusLine = h('p', { class: 'status-line', id: 'event-status' });
    this.list = h('div', { class: 'rows', id: 'event-rows', 'aria-label': 'Events, newest first',
      'data-empty': 'No events yet. They appear here as they happen.' });
    // One listener for every row: rows come and go by the hundred each second.
    this.list.addEventListener('click', (e) => {
      const head = e.target.closest('.row-head');
      if (head && this.list.contains(head)) this.toggle(head.parentElement);
    });
    const form = h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); this.apply(); } },
      h('div', { class: 'grow' },
        h('label', { for: 'selector' }, 'Selector'),
        this.input),
      h('button', { type: 'submit' }, 'Apply'),
      this.pauseButton,
      h('button', { type: 'button', class: 'secondary', onclick: () => this.clearRows() }, 'Clear'));
    this.append(
      form,
      h('p', { id: 'selector-help', class: 'status-line' },
        'Same language as hooks and `platybus monitor`; empty shows every event, * adds requests and responses.'),
      this.errorBox, this.statusLine, this.list);
    this.updateStatus();
  }

  apply() {
    this.filter = this.input.value.trim();
    this.connect();
  }

  async connect() {
    this.controller?.abort();
    const controller = this.controller = new AbortController();
    this.errorBox.textContent = '';
    this.input.removeAttribute('aria-invalid');
    this.state = 'connecting';
    this.updateStatus();
    let delay = 500;
    while (!controller.signal.aborted) {
      try {
        this.state = 'live';
        this.updateStatus();
        await this.app.api.stream(this.filter, (messages) => this.offer(messages), controller.signal);
        delay = 500;
      } catch (failure) {
        if (controller.signal.aborted) return;
        if (failure.status === 400) {
          this.showSelectorError(failure.message);
          this.state = 'stopped';
          this.updateStatus();
          return;
        }
        if (failure.status === 401 || failure.status === 403) {
          this.errorBox.textContent = failure.message;
          this.state = 'stopped';
          this.updateStatus();
          return;
        }
      }
      // The stream ended (node restarting, network): reconnect with a growing pause.
      this.state = 'reconnecting';
      this.updateStatus();
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  showSelectorError(message) {
    this.input.setAttribute('aria-invalid', 'true');
    clear(this.errorBox);
    this.errorBox.append(h('span', { class: 'selector-message' }, message));
    const at = /at position (\d+)/.exec(message);
    if (at) {
      const position = Number(at[1]);
      this.errorBox.append(h('pre', { class: 'caret', 'aria-hidden': 'true' },
        `${this.filter}\n${' '.repeat(position)}^`));
      this.input.focus();
      this.input.setSelectionRange(position, this.filter.length);
    }
  }

  offer(messages) {
    this.received += messages.length;
    const queue = this.paused ? this.held : this.pending;
    queue.push(...messages);
    // More than the cap waiting is more than can ever be shown: keep only the newest.
    if (queue.length > this.cap) queue.splice(0, queue.length - this.cap);
    if (!this.paused) this.schedule();
    else this.updateStatus();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    // At most one draw per FLUSH_MS, whatever the rate: each draw lays out the list once,
    // so a flood costs a few layouts a second, not one per event. A hidden tab still
    // drains (timers run there, animation frames do not).
    const wait = Math.max(0, this.lastFlush + this.interval - performance.now());
    setTimeout(() => requestAnimationFrame(() => this.flush()), wait);
    setTimeout(() => { if (this.scheduled && document.hidden) this.flush(); }, wait + 1000);
  }

  flush() {
    if (!this.scheduled) return;
    this.scheduled = false;
    const started = this.lastFlush = performance.now();
    const batch = this.pending;
    this.pending = [];
    if (batch.length) {
      const fragment = document.createDocumentFragment();
      for (let i = batch.length - 1; i >= 0; i--) fragment.append(this.row(batch[i]));
      if (batch.length >= this.cap) {
        this.forget(this.list.children, 0);
        this.list.replaceChildren(fragment);
      } else {
        this.list.prepend(fragment);
        const rows = this.list.children;
        if (rows.length > this.cap) {
          // One range removal instead of one removal per row.
          this.forget(rows, this.cap);
          const range = document.createRange();
          range.setStartBefore(rows[this.cap]);
          range.setEndAfter(this.list.lastChild);
          range.deleteContents();
        }
      }
    }
    this.updateStatus();
    // Draws keep to about a tenth of the main thread: a slow machine draws less often,
    // in bigger batches, and keeps answering clicks and keys.
    const cost = performance.now() - started;
    this.interval = Math.min(MAX_FLUSH_MS, Math.max(FLUSH_MS, cost * 10));
  }

  forget(rows, from) {
    for (let i = from; i < rows.length; i++) {
      const id = rows[i].dataset.id;
      if (this.byId.get(id) === rows[i]) this.byId.delete(id);
    }
  }

  row(message) {
    const head = h('button', { type: 'button', class: 'row-head', 'aria-expanded': 'false' },
      h('span', { class: 'mono time' }, time(message.ts)),
      h('span', { class: 'type' }, message.type || message.action || message.kind),
      h('span', { class: 'origin muted' }, message.origin || ''),
      h('span', { class: 'short mono' }, short(message.data ?? message.args ?? message.output ?? message.error)));
    const row = h('div', { class: 'row', 'data-id': message.id, 'data-type': message.type || message.kind }, head);
    row.message = message;
    this.byId.set(message.id, row);
    return row;
  }

  toggle(row, open) {
    const head = row.firstElementChild;
    const expanded = open ?? head.getAttribute('aria-expanded') !== 'true';
    head.setAttribute('aria-expanded', String(expanded));
    row.classList.toggle('open', expanded);
    // The body is built on first opening: most rows are never opened.
    if (expanded && !row.built) this.fill(row);
  }

  fill(row) {
    row.built = true;
    const message = row.message;
    const links = h('div', { class: 'links' });
    if (message.parent_id) {
      links.append(h('a', { href: '#', onclick: (e) => { e.preventDefault(); this.reveal(message.parent_id); } },
        `parent ${message.parent_id}`));
      links.append(h('a', { href: '#', onclick: (e) => {
        e.preventDefault();
        this.app.show('runs', { message: message.parent_id });
      } }, 'runs of the parent'));
    }
    links.append(h('a', { href: '#', onclick: (e) => {
      e.preventDefault();
      this.app.show('runs', { message: message.id });
    } }, 'runs of this event'));
    if (message.kind === 'event' || message.type) {
      links.append(h('a', { href: '#', onclick: (e) => {
        e.preventDefault();
        this.app.show('runs', { explain: { type: message.type, data: message.data } });
      } }, 'explain'));
    }
    row.append(h('div', { class: 'body' }, links, h('pre', {}, pretty(message))));
  }

  reveal(id) {
    const row = this.byId.get(id);
    if (!row) {
      this.statusLine.textContent = `The parent ${id} is no longer shown (only the last ${this.cap} rows are kept, or it did not match the selector).`;
      return;
    }
    this.toggle(row, true);
    row.scrollIntoView({ block: 'center' });
    row.firstElementChild.focus();
    row.classList.add('flash');
    setTimeout(() => row.classList.remove('flash'), 1500);
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? 'Resume' : 'Pause';
    this.pauseButton.setAttribute('aria-pressed', String(this.paused));
    if (!this.paused && this.held.length) {
      this.pending.push(...this.held);
      this.held = [];
      if (this.pending.length > this.cap) this.pending.splice(0, this.pending.length - this.cap);
      this.schedule();
    }
    this.updateStatus();
  }

  clearRows() {
    clear(this.list);
    this.byId.clear();
    this.updateStatus();
  }

  updateStatus() {
    if (!this.statusLine) return;
    const shown = this.list.childElementCount;
    const parts = [`${this.state || 'connecting'}`, `${shown} shown (at most ${this.cap})`, `${this.received} received`];
    if (this.paused) parts.push(`paused, ${this.held.length} held`);
    const text = parts.join(' · ');
    // Writing the same text again would only cost layout.
    if (this.statusLine.textContent !== text) this.statusLine.textContent = text;
  }
}

customElements.define('pb-events', EventsPage);
