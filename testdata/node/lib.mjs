// Shared by the scripts the Go tests run (nodesdk_helpers_test.go): the
// settings from the environment, a session's record, and the one JSON
// object each script prints on stdout.
import net from 'node:net';

export const env = {
  baseURL: process.env.OPENAI_BASE_URL ?? 'http://localhost:9080/v1',
  apiKey: process.env.OPENAI_API_KEY ?? '',
  model: process.env.MODEL ?? '',
  sessions: Number(process.env.SESSIONS ?? 1),
  turns: Number(process.env.TURNS ?? 1),
  holdMs: Number(process.env.HOLD_MS ?? 0),
  turnTimeoutMs: Number(process.env.TURN_TIMEOUT_MS ?? 10000),
  raw: process.env.RAW === '1',
  beta: process.env.BETA === '1',
  auth: process.env.AUTH ?? 'header',
  store: process.env.STORE !== '0',
};

// plain reports whether the base URL is plain HTTP. The SDK's Realtime
// clients open wss: URLs only (they rewrite the scheme); against a relay
// on plain HTTP, the `ws` client is given a createConnection that opens
// plain TCP to the same host and port, so the SDK's code runs unchanged
// above it.
export const plain = new URL(env.baseURL).protocol === 'http:';

export function plainConnection(opts) {
  return net.connect({ host: opts.host ?? opts.hostname, port: Number(opts.port) });
}

// newSession is what a script reports of one session.
export function newSession() {
  return {
    opened: false, subprotocol: '', events: [], closeCode: 0, closeReason: '',
    handshake: null, texts: [], usage: [], responseIds: [], statuses: [], errors: [], failures: [],
  };
}

// record notes a server event on s.
export function record(s, ev) {
  s.events.push(ev.type);
  switch (ev.type) {
    case 'response.output_text.delta':
    case 'response.text.delta':
      s.texts[s.texts.length] = ev.delta;
      break;
    case 'response.done':
    case 'response.completed':
    case 'response.incomplete':
    case 'response.failed':
      if (ev.response?.usage) s.usage.push(ev.response.usage);
      if (ev.response?.id) s.responseIds.push(ev.response.id);
      if (ev.response?.status) s.statuses.push(ev.response.status);
      break;
    case 'error':
      s.errors.push(ev.error ?? ev);
      break;
  }
}

// waiter resolves the next wait(pred) on the first event that matches it
// (or an error event), or rejects after the turn timeout.
export function waiter() {
  let want = null;
  return {
    feed(ev) {
      if (want && (want.pred(ev) || ev.type === 'error')) {
        const w = want;
        want = null;
        clearTimeout(w.timer);
        w.resolve(ev);
      }
    },
    wait(pred, what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { want = null; reject(new Error('timed out waiting for ' + what)); }, env.turnTimeoutMs);
        want = { pred, resolve, timer };
      });
    },
    fail(err) {
      if (want) {
        const w = want;
        want = null;
        clearTimeout(w.timer);
        w.resolve({ type: 'error', error: { message: String(err?.message ?? err) } });
      }
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// rawHandshake opens a plain `ws` connection and records the server's
// answer to the upgrade: the 101's subprotocol, or a refusal's status,
// headers and body.
export function rawHandshake(WebSocket, url, protocols, headers) {
  return new Promise((resolve) => {
    const s = newSession();
    const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        s.handshake = { status: res.statusCode, headers: res.headers, body };
        ws.terminate();
        resolve(s);
      });
    });
    ws.on('upgrade', (res) => { s.handshake = { status: res.statusCode, headers: res.headers, body: '' }; });
    ws.on('open', () => { s.opened = true; s.subprotocol = ws.protocol; ws.close(1000); });
    ws.on('close', (code, reason) => { s.closeCode = code; s.closeReason = String(reason); resolve(s); });
    ws.on('error', (err) => { s.failures.push(String(err.message)); });
  });
}

// finish prints the result and exits.
export function finish(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

export function fail(err) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(err?.stack ?? err) }) + '\n');
  process.exit(1);
}
