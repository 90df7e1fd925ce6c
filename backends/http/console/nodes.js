// Nodes: this node (uptime, version, config hash, bus counters) and the nodes it knows.
import { h, clear, duration, pretty } from './dom.js';

class NodesPage extends HTMLElement {
  attach(app) {
    this.app = app;
    clear(this);
    this.self = h('section', { class: 'card', 'aria-labelledby': 'this-node' });
    this.peers = h('section', { class: 'card', 'aria-labelledby': 'known-nodes' });
    this.links = h('section', { class: 'card', 'aria-labelledby': 'links-title' });
    this.errorBox = h('p', { class: 'error', role: 'alert' });
    this.append(this.errorBox, h('div', { class: 'grid2' }, this.self, h('div', {}, this.peers, this.links)));
  }

  activate() {
    this.load();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.load(), 5000);
  }

  deactivate() {
    clearInterval(this.timer);
  }

  async load() {
    let node, peers;
    try {
      [node, peers] = await Promise.all([this.app.api.get('/node'), this.app.api.get('/peers')]);
    } catch (failure) {
      this.errorBox.textContent = failure.message;
      return;
    }
    this.errorBox.textContent = '';
    const bus = node.stats?.bus || {};
    const components = node.components || {};
    clear(this.self).append(
      h('h2', { id: 'this-node' }, `This node: ${node.node}`),
      facts([
        ['state', node.state], ['version', node.version], ['uptime', duration(node.uptime)],
        ['config hash', node.config_hash || '-'], ['pid', node.pid ?? '-'],
        ['backends', Object.entries(components.backends || {}).map(([k, v]) => `${k} (${v})`).join(', ') || '-'],
        ['plugins', (components.plugins || []).join(', ')], ['discovery', String(components.discovery ?? '-')],
      ]),
      h('h3', {}, 'Bus counters'),
      facts(Object.entries(bus).filter(([, v]) => typeof v !== 'object').map(([k, v]) => [k.replace(/_/g, ' '), String(v)])));
    const known = peers.discovery || [];
    clear(this.peers).append(h('h2', { id: 'known-nodes' }, `Nodes found by discovery (${known.length})`));
    if (!known.length) this.peers.append(h('p', { class: 'muted' }, 'No other node announced itself yet.'));
    else {
      this.peers.append(h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['node', 'version', 'address', 'console'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, known.map((peer) => {
          const address = (peer.addresses || [])[0] || peer.host;
          const http = (peer.services || []).find((s) => s.name === 'http');
          const port = http ? http.port : peer.port;
          const href = address && port ? `http://${address.includes(':') ? `[${address}]` : address}:${port}/` : null;
          return h('tr', { 'data-node': peer.node_id },
            h('td', {}, peer.node_id), h('td', {}, peer.version || '-'), h('td', { class: 'mono' }, `${address || '-'}${port ? `:${port}` : ''}`),
            h('td', {}, href ? h('a', { href, rel: 'noopener noreferrer', target: '_blank' }, 'open console') : '-'));
        })))));
    }
    const links = Object.entries(peers.links || {});
    clear(this.links).append(h('h2', { id: 'links-title' }, 'Links'));
    if (!links.length) this.links.append(h('p', { class: 'muted' }, 'This node has no link to other nodes (no redis backend).'));
    for (const [name, report] of links) {
      const { link, url, buffered, last_error: lastError, down_since: downSince, ...counters } = report;
      this.links.append(h('h3', {}, `${name}: `, h('span', { class: link === 'up' ? 'ok' : 'bad' }, link)),
        facts([['url', url], ['buffered (pending)', String(buffered)], ['down since', downSince ? new Date(downSince * 1000).toLocaleString() : '-'],
          ['last error', lastError || '-']]),
        h('pre', {}, pretty(counters)));
    }
  }
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '-')]));
}

customElements.define('pb-nodes', NodesPage);
