// Types of vibehq's REST API as this client reads and writes them (see /openapi.json).

export interface NewTask {
  task_type: string;
  /** A command *name* a worker allows, never a shell line. */
  command: string;
  parameters?: Record<string, unknown>;
  /** 0-9, higher first. */
  priority?: number;
  worker_name?: string;
  container_name?: string;
  max_attempts?: number;
  task_id?: string;
  idempotency_key?: string;
  run_at?: string;
  delay_ms?: number;
  depends_on?: string[];
  concurrency_key?: string;
}

export interface Submitted { task_id: string; sequence: number; created: boolean }

export interface Claim {
  task_id: string;
  task_type: string;
  command: string;
  parameters: Record<string, unknown> | null;
  priority: number;
  attempt: number;
  max_attempts: number;
  lease_ms: number;
}

export interface FailOutcome { retried: boolean; backoff_ms: number; sequence: number }

export interface FeedEvent {
  sequence: number;
  type: string;
  task_id: string;
  status: string | null;
  worker_name: string;
  container_name: string | null;
  occurred_at: string;
  payload: unknown;
}

/** vibehq refused a request: its status, code, message and the field at fault. */
export class Refused extends Error {
  status: number;
  code: string;
  field: string | null;
}

export interface ClientOptions { workerName?: string; containerName?: string; token?: string }

export class Client {
  constructor(baseUrl: string, options?: ClientOptions);
  submit(task: NewTask): Promise<Submitted>;
  submitMany(tasks: NewTask[]): Promise<Submitted[]>;
  claim(waitMs?: number): Promise<Claim | null>;
  start(claim: Claim): Promise<number>;
  heartbeat(claim: Claim): Promise<void>;
  progress(claim: Claim, percent?: number, message?: string): Promise<void>;
  complete(claim: Claim, output?: string): Promise<number>;
  fail(claim: Claim, error: string, retry?: boolean): Promise<FailOutcome>;
  cancel(taskId: string, reason?: string): Promise<number>;
  task(taskId: string, minSeq?: number): Promise<Record<string, unknown>>;
  /** Follows /ws/tasks (Node 22+ or a global WebSocket); call the returned function to stop. */
  watch(
    filter: { status?: string; worker_name?: string; task_type?: string; after_seq?: number },
    onEvent: (event: FeedEvent) => void,
  ): Promise<() => void>;
}
