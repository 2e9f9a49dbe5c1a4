// vibehq-client: what a worker or a service needs of a running vibehq, over its REST API.
// Types: index.d.ts. Every call is one request as the worker (and container) the client acts
// as, with the bearer token if given; a refusal throws `Refused` with the server's status,
// code, message and field. tests/it/client.rs runs it against a real vibehq.

export class Refused extends Error {
  constructor(status, code, message, field) {
    super(`${status}: ${message}${field ? ` (field ${field})` : ''}`);
    this.status = status;
    this.code = code;
    this.field = field ?? null;
  }
}

const segment = (text) => encodeURIComponent(text);

export class Client {
  constructor(baseUrl, { workerName, containerName, token } = {}) {
    if (!/^https?:\/\//.test(baseUrl)) throw new TypeError(`${baseUrl} is not an http:// or https:// URL`);
    this.base = baseUrl.replace(/\/+$/, '');
    this.workerName = workerName;
    this.containerName = containerName;
    this.token = token;
  }

  submit(task) {
    return this.#call('POST', '/api/tasks', this.#submission(task));
  }

  submitMany(tasks) {
    return this.#call('POST', '/api/tasks', tasks.map((t) => this.#submission(t)));
  }

  claim(waitMs = 0) {
    return this.#call('POST', '/api/tasks/claim', { ...this.#me(), wait_ms: waitMs });
  }

  async start(claim) {
    return (await this.#result(claim, 'start', {})).sequence;
  }

  async heartbeat(claim) {
    await this.#result(claim, 'heartbeat', {});
  }

  async progress(claim, percent, message) {
    const body = {};
    if (percent !== undefined) body.percent = percent;
    if (message !== undefined) body.message = message;
    await this.#result(claim, 'progress', body);
  }

  async complete(claim, output) {
    return (await this.#result(claim, 'complete', output === undefined ? {} : { output })).sequence;
  }

  fail(claim, error, retry = true) {
    return this.#result(claim, 'fail', { error, retry });
  }

  async cancel(taskId, reason) {
    const body = reason === undefined ? {} : { reason };
    return (await this.#call('POST', `/api/tasks/${segment(taskId)}/cancel`, body)).sequence;
  }

  task(taskId, minSeq) {
    const query = minSeq === undefined ? '' : `?min_seq=${minSeq}`;
    return this.#call('GET', `/api/tasks/${segment(taskId)}${query}`);
  }

  async watch(filter, onEvent) {
    const query = new URLSearchParams(
      Object.entries(filter ?? {}).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]),
    ).toString();
    const url = `${this.base.replace(/^http/, 'ws')}/ws/tasks${query ? `?${query}` : ''}`;
    const socket = new WebSocket(url);
    socket.addEventListener('message', (message) => onEvent(JSON.parse(message.data)));
    await new Promise((resolve, reject) => {
      socket.addEventListener('open', resolve, { once: true });
      socket.addEventListener('error', () => reject(new Error(`cannot open ${url}`)), { once: true });
    });
    return () => socket.close();
  }

  #me() {
    const me = {};
    if (this.workerName) me.worker_name = this.workerName;
    if (this.containerName) me.container_name = this.containerName;
    return me;
  }

  #submission(task) {
    return this.workerName && task.submitted_by === undefined ? { ...task, submitted_by: this.workerName } : { ...task };
  }

  #result(claim, what, body) {
    return this.#call('POST', `/api/tasks/${segment(claim.task_id)}/${what}`, {
      ...body, ...this.#me(), attempt: claim.attempt,
    });
  }

  async #call(method, path, body) {
    const headers = { 'content-type': 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(this.base + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const text = await response.text();
    if (!response.ok) {
      let detail = {};
      try { detail = JSON.parse(text).error ?? {}; } catch { /* not JSON */ }
      throw new Refused(response.status, detail.code ?? 'unknown', detail.message ?? text, detail.field);
    }
    return JSON.parse(text);
  }
}
