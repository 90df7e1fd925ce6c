// Every call to the node: same origin, a bearer token, JSON bodies, no cookies.

export class ApiError extends Error {
  constructor(status, info) {
    super(info?.message || `HTTP ${status}`);
    this.status = status;
    this.type = info?.type || 'HTTPError';
    this.details = info?.details || {};
  }
}

async function readAnswer(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { type: 'BadAnswer', message: text.slice(0, 300) } };
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  headers(accept = 'application/json') {
    const headers = { 'Content-Type': 'application/json', Accept: accept };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async request(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method, headers: this.headers(), credentials: 'omit', cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, { type: 'NetworkError', message: `the node did not answer: ${error.message}` });
    }
    const data = await readAnswer(res);
    if (!res.ok) throw new ApiError(res.status, data?.error);
    return data;
  }

  get(path) { return this.request('GET', path); }
  post(path, body) { return this.request('POST', path, body); }

  // Returns the Response message (output or error) and the HTTP status, never throws for
  // an action's own error, so a form can show it next to the field it names.
  async execute(action, args, target) {
    const body = { action, args };
    if (target) body.target = target;
    let res;
    try {
      res = await fetch('/execute', {
        method: 'POST', headers: this.headers(), credentials: 'omit', cache: 'no-store',
        body: JSON.stringify(body),
      });
    } catch (error) {
      return { status: 0, response: { error: { type: 'NetworkError', message: error.message } } };
    }
    return { status: res.status, response: await readAnswer(res) };
  }

  // Follows GET /events (Server-Sent Events read through fetch, so the token travels in a
  // header); calls onMessages with each chunk's messages; resolves when the stream ends.
  async stream(filter, onMessages, signal) {
    const url = '/events' + (filter ? `?filter=${encodeURIComponent(filter)}` : '');
    const res = await fetch(url, {
      headers: this.headers('text/event-stream'), credentials: 'omit', cache: 'no-store', signal,
    });
    if (!res.ok) throw new ApiError(res.status, (await readAnswer(res))?.error);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const cut = buffer.lastIndexOf('\n\n');
      if (cut < 0) continue;
      const frames = buffer.slice(0, cut).split('\n\n');
      buffer = buffer.slice(cut + 2);
      const messages = [];
      for (const frame of frames) {
        for (const line of frame.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          try {
            messages.push(JSON.parse(line.slice(6)));
          } catch {
            // a frame that is not JSON is skipped, the stream goes on
          }
        }
      }
      if (messages.length) onMessages(messages);
    }
  }
}
