// Runs and reasons: hooks, cron jobs and procedures, their last runs, and an explain box.
import { h, clear, when, time, short, pretty, ms } from './dom.js';

const BAD = new Set(['error', 'failed', 'timeout', 'dropped']);

class RunsPage extends HTMLElement {
  attach(app) {
    this.app = app;
    this.focusMessage = null;
    clear(this);
    this.summary = h('div', { class: 'grid2' });
    this.runList = h('div', { id: 'run-list' });
    this.reasonList = h('div', { id: 'reason-list' });
    this.errorBox = h('p', { class: 'error', role: 'alert' });
    this.focusLine = h('p', { class: 'status-line', id: 'runs-focus' });
    this.explainInput = h('textarea', { id: 'explain-event', spellcheck: 'false', rows: 5,
      'aria-describedby': 'explain-help' }, '{"type": "file.created", "data": {"path": "watched/a.txt", "is_directory": false}}');
    this.explainResult = h('div', { id: 'explain-result', 'aria-live': 'polite' });
    this.append(
      h('div', { class: 'toolbar' },
        h('button', { type: 'button', class: 'secondary', id: 'runs-refresh', onclick: () => this.load() }, 'Refresh'),
        this.focusLine),
      this.errorBox,
      this.summary,
      h('section', { class: 'card', 'aria-labelledby': 'runs-title' },
        h('h2', { id: 'runs-title' }, 'Last runs (failed first)'), this.runList),
      h('section', { class: 'card', 'aria-labelledby': 'reasons-title' },
        h('h2', { id: 'reasons-title' }, 'Events and the hooks they did not run'), this.reasonList),
      h('section', { class: 'card', 'aria-labelledby': 'explain-title' },
        h('h2', { id: 'explain-title' }, 'Explain an event'),
        h('form', { onsubmit: (e) => { e.preventDefault(); this.explain(); } },
          h('label', { for: 'explain-event' }, 'Event (JSON with type and data)'),
          this.explainInput,
          h('p', { id: 'explain-help', class: 'status-line' },
            'Nothing runs: the node only says which hooks would fire and why the others would not. Pick an event with "explain" on an event row.'),
          h('button', { type: 'submit', id: 'explain-button' }, 'Explain')),
        this.explainResult));
  }

  activate(options = {}) {
    if (options.message !== undefined) this.focusMessage = options.message;
    if (options.explain) {
      this.explainInput.value = pretty(options.explain);
      this.explain();
    }
    this.load();
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      // Never redraw under a keyboard user's focus.
      const at = document.activeElement;
      if (!(this.runList.contains(at) || this.reasonList.contains(at))) this.load();
    }, 3000);
  }

  deactivate() {
    clearInterval(this.timer);
  }

  async load() {
    let answer;
    try {
      answer = await this.app.api.get('/runs?last=300');
    } catch (failure) {
      this.errorBox.textContent = failure.message;
      return;
    }
    this.errorBox.textContent = '';
    this.draw(answer);
  }

  draw({ status, traces }) {
    const runs = traces.filter((t) => t.kind !== 'event');
    const events = traces.filter((t) => t.kind === 'event');
    const last = new Map();
    for (const run of runs) last.set(`${run.kind}:${run.name}`, run);
    clear(this.summary);
    if (status) {
      this.summary.append(
        this.table('Hooks', ['hook', 'mode', 'last run', 'outcome'], status.hooks.map((hook) => {
          const run = last.get(`hook:${hook.name}`);
          return [hook.name + (hook.enabled ? '' : ' (disabled)'), hook.mode,
            run ? when(run.ts) : '-', outcome(run?.outcome)];
        })),
        this.table('Cron jobs', ['job', 'when', 'next', 'outcome'], status.cron.map((job) => {
          const run = last.get(`cron:${job.name}`);
          return [job.name, job.when, when(job.next), outcome(run?.outcome)];
        })),
        this.table('Procedures', ['procedure', 'last run', 'outcome'], status.procedures.map((name) => {
          const run = last.get(`procedure:${name.replace(/^procedure\./, '')}`);
          return [name, run ? when(run.ts) : '-', outcome(run?.outcome)];
        })));
    }
    const focus = this.focusMessage;
    this.focusLine.textContent = focus ? `Showing runs and reasons for message ${focus} first.` : '';
    const rank = (run) => (focus && run.message_id === focus ? 0 : BAD.has(run.outcome) ? 1 : 2);
    runs.sort((a, b) => rank(a) - rank(b) || b.ts - a.ts);
    const open = new Set([...this.runList.querySelectorAll('details[open]')].map((d) => d.dataset.id));
    clear(this.runList);
    if (!runs.length) this.runList.append(h('p', { class: 'muted' }, 'No runs yet.'));
    for (const run of runs.slice(0, 150)) this.runList.append(this.run(run, open.has(run.id)));
    events.sort((a, b) => (focus && a.message_id === focus ? -1 : 0) - (focus && b.message_id === focus ? -1 : 0) || b.ts - a.ts);
    clear(this.reasonList);
    if (!events.length) this.reasonList.append(h('p', { class: 'muted' }, 'No event has reached a hook yet.'));
    for (const trace of events.slice(0, 60)) this.reasonList.append(this.reasons(trace));
  }

  table(title, head, rows) {
    return h('section', { class: 'card' }, h('h2', {}, title),
      rows.length ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))))
        : h('p', { class: 'muted' }, 'None configured.'));
  }

  run(run, open) {
    const steps = run.actions || [];
    const details = h('details', { class: 'run', 'data-id': run.id, 'data-outcome': run.outcome,
      'data-name': run.name, open },
      h('summary', {}, outcome(run.outcome), ' ', h('strong', {}, `${run.kind} ${run.name}`), ' ',
        h('span', { class: 'muted' }, `${time(run.ts)} · ${ms(run.duration)} · ${steps.length} step(s)`),
        run.error ? h('span', { class: 'bad run-error' }, ` — ${run.error}`) : null),
      h('div', { class: 'table-wrap' }, steps.length ? h('table', {},
        h('thead', {}, h('tr', {}, ['step', 'action', 'duration', 'output / error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, steps.map((step) => h('tr', {},
          h('td', { class: 'mono' }, step.step),
          h('td', {}, step.action + (step.target ? ` → ${step.target}` : ''), h('div', { class: 'muted mono small' }, short(step.args, 200))),
          h('td', {}, ms(step.duration)),
          h('td', { class: step.ok ? 'mono' : 'mono bad' }, step.ok ? short(step.output, 300) : step.error)))))
        : h('p', { class: 'muted' }, 'No action ran.')),
      run.message_id ? h('p', { class: 'small muted' }, `triggered by message ${run.message_id}`) : null,
      Object.keys(run.variables || {}).length ? h('pre', {}, pretty(run.variables)) : null);
    return details;
  }

  reasons(trace) {
    return h('div', { class: 'reason', 'data-message': trace.message_id || '' },
      h('p', {}, h('strong', {}, trace.name), ' ', h('span', { class: 'muted' }, `${time(trace.ts)} · ${trace.outcome}`)),
      h('ul', {}, (trace.candidates || []).map((c) => h('li', { 'data-hook': c.hook },
        c.matched ? h('span', { class: 'ok' }, `${c.hook}: matched`) :
          h('span', {}, h('span', { class: 'warn' }, `${c.hook}: not matched`), ` because ${c.reason}`)))));
  }

  async explain() {
    clear(this.explainResult);
    let event;
    try {
      event = JSON.parse(this.explainInput.value);
    } catch (error) {
      this.explainResult.append(h('p', { class: 'error', role: 'alert' }, `Not JSON: ${error.message}`));
      return;
    }
    let answer;
    try {
      answer = await this.app.api.post('/explain', { event });
    } catch (failure) {
      this.explainResult.append(h('p', { class: 'error', role: 'alert' }, failure.message));
      return;
    }
    if (!answer.hooks.length) this.explainResult.append(h('p', { class: 'muted' }, 'This node has no hooks.'));
    this.explainResult.append(h('ul', { class: 'explained' }, answer.hooks.map((hook) => h('li', { 'data-hook': hook.hook },
      hook.fires
        ? h('span', {}, h('span', { class: 'ok' }, `${hook.hook}: would run`),
          h('pre', {}, pretty(hook.steps)))
        : h('span', {}, h('span', { class: 'warn' }, `${hook.hook}: would not run`), ` because ${hook.reason}`)))));
  }
}

function outcome(value) {
  if (!value) return h('span', { class: 'muted' }, 'never');
  const cls = value === 'ok' ? 'pill ok' : BAD.has(value) ? 'pill bad' : 'pill warn';
  return h('span', { class: cls }, value);
}

customElements.define('pb-runs', RunsPage);
