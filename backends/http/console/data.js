// Variables and the outbox: viewed by every token, changed by an admin token.
import { h, clear, when, short } from './dom.js';

class DataPage extends HTMLElement {
  attach(app) {
    this.app = app;
    clear(this);
    this.admin = app.isAdmin();
    this.variables = h('tbody', { id: 'variable-rows' });
    this.outbox = h('tbody', { id: 'outbox-rows' });
    this.errorBox = h('p', { class: 'error', role: 'alert' });
    const name = h('input', { id: 'new-variable-name', type: 'text', spellcheck: 'false', required: true });
    const value = h('input', { id: 'new-variable-value', type: 'text', spellcheck: 'false', placeholder: '"text", 3, true, {"a": 1}' });
    this.append(this.errorBox,
      h('section', { class: 'card', 'aria-labelledby': 'variables-title' },
        h('h2', { id: 'variables-title' }, 'Variables'),
        h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['name', 'value (JSON)', ''].map((c) => h('th', { scope: 'col' }, c)))),
          this.variables)),
        this.admin ? h('form', { class: 'toolbar', onsubmit: (e) => {
          e.preventDefault();
          this.setVariable(name.value.trim(), value.value).then((ok) => { if (ok) { name.value = ''; value.value = ''; } });
        } },
          h('div', {}, h('label', { for: 'new-variable-name' }, 'New variable'), name),
          h('div', { class: 'grow' }, h('label', { for: 'new-variable-value' }, 'Value (JSON, or plain text)'), value),
          h('button', { type: 'submit' }, 'Set')) : h('p', { class: 'muted small' }, 'An admin token can edit variables.')),
      h('section', { class: 'card', 'aria-labelledby': 'outbox-title' },
        h('h2', { id: 'outbox-title' }, 'Outbox (events notifiers failed to send)'),
        h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['notifier', 'event', 'tries', 'state', 'last error', ''].map((c) => h('th', { scope: 'col' }, c)))),
          this.outbox))));
  }

  activate() {
    this.load();
  }

  async load() {
    let variables, outbox;
    try {
      [variables, outbox] = await Promise.all([this.app.api.get('/variables'), this.app.api.get('/outbox')]);
    } catch (failure) {
      this.errorBox.textContent = failure.message;
      return;
    }
    this.errorBox.textContent = '';
    clear(this.variables);
    const names = Object.keys(variables || {}).sort();
    if (!names.length) this.variables.append(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No variables.')));
    for (const name of names) this.variables.append(this.variableRow(name, variables[name]));
    clear(this.outbox);
    if (!outbox.length) this.outbox.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'The outbox is empty.')));
    for (const entry of outbox) this.outbox.append(this.outboxRow(entry));
  }

  variableRow(name, value) {
    const id = `var-${name.replace(/[^A-Za-z0-9]/g, '-')}`;
    const input = h('input', { id, type: 'text', value: JSON.stringify(value), readonly: !this.admin, spellcheck: 'false' });
    return h('tr', { 'data-variable': name },
      h('th', { scope: 'row' }, h('label', { for: id, class: 'mono' }, name)),
      h('td', {}, input),
      h('td', {}, this.admin ? [
        h('button', { type: 'button', class: 'secondary', 'aria-label': `Save ${name}`, onclick: () => this.setVariable(name, input.value) }, 'Save'), ' ',
        h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${name}`, onclick: () => this.deleteVariable(name) }, 'Delete'),
      ] : null));
  }

  async setVariable(name, text) {
    if (!name) return false;
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      value = text;  // plain text is a string
    }
    return this.change('/variables', { name, value });
  }

  deleteVariable(name) {
    return this.change('/variables', { name, delete: true });
  }

  async change(path, body) {
    try {
      await this.app.api.post(path, body);
    } catch (failure) {
      this.errorBox.textContent = failure.message;
      return false;
    }
    await this.load();
    return true;
  }

  outboxRow(entry) {
    const label = `${entry.event_type} ${entry.event_id}`;
    return h('tr', { 'data-event': entry.event_id },
      h('td', {}, entry.notifier),
      h('td', {}, entry.event_type, h('div', { class: 'mono small muted' }, entry.event_id)),
      h('td', {}, String(entry.attempts)),
      h('td', {}, entry.expired ? h('span', { class: 'bad' }, 'expired') : `next try ${when(entry.next_attempt)}`),
      h('td', { class: 'small' }, short(entry.last_error, 160)),
      h('td', {}, this.admin ? [
        h('button', { type: 'button', class: 'secondary', 'aria-label': `Retry ${label}`,
          onclick: () => this.change('/outbox', { op: 'retry', notifier: entry.notifier, event_id: entry.event_id }) }, 'Retry'), ' ',
        h('button', { type: 'button', class: 'danger', 'aria-label': `Drop ${label}`,
          onclick: () => this.change('/outbox', { op: 'drop', notifier: entry.notifier, event_id: entry.event_id }) }, 'Drop'),
      ] : null));
  }
}

customElements.define('pb-data', DataPage);
