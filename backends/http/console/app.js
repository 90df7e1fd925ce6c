// The console: sign-in, tabs, and the pages (each a custom element in its own module).
import { Api, ApiError } from './api.js';
import './events.js';
import './runs.js';
import './actions.js';
import './nodes.js';
import './data.js';

const KEY = 'platybus.token';
const $ = (id) => document.getElementById(id);

class ConsoleApp {
  constructor() {
    this.rows = Number(document.querySelector('meta[name=platybus-rows]')?.content) || 500;
    this.api = null;
    this.who = null;
    this.pages = ['events', 'runs', 'actions', 'nodes', 'data'];
  }

  async start() {
    $('sign-in-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.signIn($('token').value.trim());
    });
    $('sign-out').addEventListener('click', () => this.signOut());
    this.bindTabs();
    // A link from `platybus console` carries the token once, in the fragment: take it
    // and remove it from the address bar and the history.
    const fragment = new URLSearchParams(location.hash.slice(1));
    const fromLink = fragment.get('token');
    if (fromLink) history.replaceState(null, '', location.pathname + location.search);
    const token = fromLink || sessionStorage.getItem(KEY);
    if (token) await this.signIn(token);
    // A loopback node without a token lets this machine in as it is.
    else if (!(await this.signIn('', true))) $('token').focus();
  }

  async signIn(token, probe = false) {
    const error = $('sign-in-error');
    error.textContent = '';
    if (!token && !probe) {
      error.textContent = 'Paste a token first.';
      return;
    }
    const api = new Api(token);
    let who;
    try {
      who = await api.get('/whoami');
    } catch (failure) {
      if (failure.status === 404) {
        // A node without token scopes: a token that opens /node may do everything.
        try {
          await api.get('/node');
          who = { name: 'token', scope: 'admin', execute: ['*'] };
        } catch (again) {
          failure = again;
        }
      }
      if (!who) {
        if (probe) return false;
        sessionStorage.removeItem(KEY);
        error.textContent = failure.status === 401
          ? 'This token was refused by the node (wrong or expired token).'
          : `Cannot sign in: ${failure.message}`;
        $('token').setAttribute('aria-invalid', 'true');
        $('token').focus();
        return false;
      }
    }
    $('token').removeAttribute('aria-invalid');
    $('token').value = '';
    if (token) sessionStorage.setItem(KEY, token);
    this.api = api;
    this.who = { execute: [], ...who };
    $('sign-in').hidden = true;
    $('console').hidden = false;
    $('sign-out').hidden = false;
    const badge = $('who');
    badge.hidden = false;
    badge.textContent = `${this.who.name || 'token'} · ${this.who.scope}`;
    badge.dataset.scope = this.who.scope;
    // A read or publish token has no action runner at all.
    $('tab-actions').hidden = !this.mayExecute();
    for (const page of this.pages) this.page(page).attach(this);
    try {
      const node = await api.get('/node');
      $('node-name').textContent = node.node;
      document.title = `${node.node} · platybus console`;
    } catch (failure) {
      console.warn('node info', failure);
    }
    this.show('events');
    return true;
  }

  signOut() {
    sessionStorage.removeItem(KEY);
    location.reload();
  }

  mayExecute() {
    return this.who && ['execute', 'admin'].includes(this.who.scope);
  }

  isAdmin() {
    return this.who && this.who.scope === 'admin';
  }

  page(name) {
    return $(`page-${name}`).firstElementChild;
  }

  bindTabs() {
    const tabs = [...document.querySelectorAll('[role=tab]')];
    for (const tab of tabs) {
      tab.addEventListener('click', () => this.show(tab.id.slice(4)));
      tab.addEventListener('keydown', (e) => {
        const visible = tabs.filter((t) => !t.hidden);
        const at = visible.indexOf(tab);
        let next = null;
        if (e.key === 'ArrowRight') next = visible[(at + 1) % visible.length];
        else if (e.key === 'ArrowLeft') next = visible[(at - 1 + visible.length) % visible.length];
        else if (e.key === 'Home') next = visible[0];
        else if (e.key === 'End') next = visible[visible.length - 1];
        if (next) {
          e.preventDefault();
          this.show(next.id.slice(4));
          next.focus();
        }
      });
    }
  }

  show(name, options = {}) {
    for (const page of this.pages) {
      const selected = page === name;
      const tab = $(`tab-${page}`);
      tab.setAttribute('aria-selected', String(selected));
      tab.tabIndex = selected ? 0 : -1;
      $(`page-${page}`).hidden = !selected;
      const element = this.page(page);
      if (selected) element.activate?.(options);
      else element.deactivate?.();
    }
  }
}

export { ApiError };
const app = new ConsoleApp();
window.platybusConsole = app;
app.start();
