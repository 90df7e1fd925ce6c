// Actions: each action's doc and signature, and a form generated from its parameters.
import { h, clear, pretty, globMatch } from './dom.js';

class ActionsPage extends HTMLElement {
  attach(app) {
    this.app = app;
    this.loaded = false;
    clear(this);
    this.search = h('input', { id: 'action-search', type: 'search', placeholder: 'node.ping',
      oninput: () => this.filter() });
    this.target = h('select', { id: 'action-target' }, h('option', { value: '' }, 'this node'));
    this.list = h('div', { id: 'action-list' });
    this.errorBox = h('p', { class: 'error', role: 'alert' });
    this.append(
      h('div', { class: 'toolbar' },
        h('div', { class: 'grow' }, h('label', { for: 'action-search' }, 'Find an action'), this.search),
        h('div', {}, h('label', { for: 'action-target' }, 'Run on'), this.target)),
      this.errorBox,
      h('section', { class: 'card' }, this.list));
  }

  async activate() {
    if (this.loaded) return;
    let actions, peers;
    try {
      [actions, peers] = await Promise.all([this.app.api.get('/actions'),
        this.app.api.get('/peers').catch(() => ({ discovery: [] }))]);
    } catch (failure) {
      this.errorBox.textContent = failure.message;
      return;
    }
    this.loaded = true;
    for (const peer of peers.discovery || []) {
      this.target.append(h('option', { value: peer.node_id }, peer.node_id));
    }
    const globs = this.app.who.scope === 'admin' ? ['*'] : this.app.who.execute || [];
    clear(this.list);
    for (const action of actions) {
      if (!globs.some((g) => globMatch(g, action.name))) continue;
      this.list.append(this.action(action));
    }
    if (!this.list.childElementCount) this.list.append(h('p', { class: 'muted' }, 'This token may run no action.'));
  }

  filter() {
    const text = this.search.value.trim().toLowerCase();
    for (const item of this.list.querySelectorAll('.action')) {
      item.hidden = Boolean(text) && !item.dataset.name.toLowerCase().includes(text);
    }
  }

  action(action) {
    const id = action.name.replace(/[^A-Za-z0-9]/g, '-');
    const item = h('details', { class: 'action', 'data-name': action.name, id: `action-${id}` },
      h('summary', {}, h('strong', { class: 'mono' }, action.name), ' ',
        h('span', { class: 'muted' }, action.doc || '')));
    item.addEventListener('toggle', () => {
      if (item.open && !item.built) {
        item.built = true;
        item.append(this.form(action, id));
      }
    }, { once: false });
    return item;
  }

  form(action, id) {
    const fields = [];
    const output = h('div', { class: 'action-output', 'aria-live': 'polite' });
    const formError = h('p', { class: 'error form-error', role: 'alert' });
    const form = h('form', { class: 'action-form', 'data-action': action.name, novalidate: true },
      h('p', { class: 'mono small muted' }, `${action.name}${action.signature || '()'}`));
    for (const param of action.params || []) {
      const inputId = `arg-${id}-${param.name}`;
      const errorId = `${inputId}-error`;
      let input;
      if (param.type === 'boolean') {
        input = h('input', { id: inputId, type: 'checkbox', checked: param.default === true, 'aria-describedby': errorId });
      } else if (['array', 'object', 'any'].includes(param.type)) {
        input = h('textarea', { id: inputId, rows: 2, spellcheck: 'false', 'aria-describedby': errorId,
          placeholder: param.default !== undefined ? JSON.stringify(param.default) : 'JSON' });
      } else {
        input = h('input', { id: inputId, type: 'text', spellcheck: 'false', 'aria-describedby': errorId,
          inputmode: ['integer', 'number'].includes(param.type) ? 'decimal' : undefined,
          placeholder: param.default !== undefined && param.default !== null ? String(param.default) : '' });
      }
      input.name = param.name;
      const fieldError = h('span', { class: 'field-error', id: errorId, role: 'alert' });
      fields.push({ param, input, fieldError });
      form.append(h('div', { class: 'field', 'data-field': param.name },
        param.type === 'boolean'
          ? h('label', { class: 'inline', for: inputId }, input, param.name)
          : h('label', { for: inputId }, param.name, ' ',
            h('span', { class: 'hint' }, `${param.type}${param.required ? ', required' : param.default !== undefined ? `, default ${JSON.stringify(param.default)}` : ''}`)),
        param.type === 'boolean' ? null : input,
        fieldError));
    }
    if (!fields.length) form.append(h('p', { class: 'muted small' }, 'No arguments.'));
    const button = h('button', { type: 'submit' }, `Run ${action.name}`);
    form.append(button, formError, output);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      formError.textContent = '';
      clear(output);
      const args = {};
      let bad = false;
      for (const { param, input, fieldError } of fields) {
        fieldError.textContent = '';
        input.removeAttribute('aria-invalid');
        try {
          const value = readValue(param, input);
          if (value !== undefined) args[param.name] = value;
        } catch (error) {
          fieldError.textContent = error.message;
          input.setAttribute('aria-invalid', 'true');
          bad = true;
        }
      }
      if (bad) return;
      button.disabled = true;
      const { status, response } = await this.app.api.execute(action.name, args, this.target.value);
      button.disabled = false;
      const error = response?.error;
      if (!error) {
        output.append(h('p', { class: 'ok' }, response.duration ? `${status} · ${(response.duration * 1000).toFixed(1)} ms` : `${status} OK`),
          h('pre', { class: 'action-result' }, pretty(response.output)));
        return;
      }
      const field = fields.find((f) => f.param.name === error.details?.argument);
      if (field && error.type === 'ArgumentError') {
        field.fieldError.textContent = error.message;
        field.input.setAttribute('aria-invalid', 'true');
        field.input.focus();
      } else {
        formError.textContent = `${error.type}: ${error.message}`;
      }
    });
    return form;
  }
}

// A field's value as the action expects it; the node validates, so text that is not a
// number is sent as typed and comes back as the node's own error for that field.
function readValue(param, input) {
  if (param.type === 'boolean') return input.checked;
  const text = input.value.trim();
  if (!text) {
    if (param.required && param.type === 'string') return '';
    return undefined;
  }
  if (param.type === 'integer') return /^-?\d+$/.test(text) ? Number(text) : text;
  if (param.type === 'number') return text !== '' && Number.isFinite(Number(text)) ? Number(text) : text;
  if (param.type === 'string') return input.value;
  try {
    return JSON.parse(text);
  } catch {
    if (param.type === 'any') return text;
    throw new Error(`${param.name}: not valid JSON`);
  }
}

customElements.define('pb-actions', ActionsPage);
