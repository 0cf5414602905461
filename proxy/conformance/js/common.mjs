// What the gRPC scenario scripts (admin.mjs, fullsdk.mjs) share: reading the command
// line, normalising values of either SDK to one JSON shape, and running a scenario list
// into one printed JSON object (scenario name -> {result} or {failed}).
//
// Normalised away, because they must differ between two runs: server timestamps (a
// Timestamp within 30 minutes of now) and automatic document ids (the scripts replace
// them). Types are told apart by shape, not by class, so one normaliser serves
// firebase-admin (Buffer bytes, @google-cloud/firestore classes) and the Firebase SDK
// (Bytes, its own Timestamp).

export function args(usage) {
  const [addr, projectId] = process.argv.slice(2);
  if (!addr || !projectId) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  const i = addr.lastIndexOf(":");
  return { addr, host: addr.slice(0, i), port: Number(addr.slice(i + 1)), projectId };
}

const SERVER_TIME_WINDOW_MS = 30 * 60 * 1000;

export function norm(v) {
  if (v === null || v === undefined) return { null: true };
  if (typeof v === "boolean") return { bool: v };
  if (typeof v === "number") return { number: Object.is(v, -0) ? "-0" : Number.isFinite(v) ? v : String(v) };
  if (typeof v === "bigint") return { integer: String(v) };
  if (typeof v === "string") return { string: v };
  if (Array.isArray(v)) return { array: v.map(norm) };
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString("base64") };
  if (typeof v.toBase64 === "function") return { bytes: v.toBase64() };
  if (typeof v.toMillis === "function" && "nanoseconds" in v) {
    if (Math.abs(Date.now() - v.toMillis()) < SERVER_TIME_WINDOW_MS) return { time: "<server time>" };
    return { time: v.toDate().toISOString(), nanos: v.nanoseconds };
  }
  if (typeof v.latitude === "number" && typeof v.longitude === "number") return { geo: [v.latitude, v.longitude] };
  if (typeof v.path === "string" && typeof v.id === "string" && v.firestore) return { ref: v.path };
  if (typeof v === "object") return { map: normMap(v) };
  return { unknown: String(v) };
}

export function normMap(m) {
  const out = {};
  for (const k of Object.keys(m).sort()) out[k] = norm(m[k]);
  return out;
}

// AUTO_ID is the shape of an SDK-generated document id (20 characters).
const AUTO_ID = /(^|\/)[A-Za-z0-9]{20}$/;

// sansAutoId replaces a generated id at the end of a document path.
export function sansAutoId(path) {
  return path.replace(AUTO_ID, "$1<auto id>");
}

// snap normalises a document snapshot of either SDK (exists is a method on the
// Firebase SDK's, a property on firebase-admin's).
export function snap(s) {
  const exists = typeof s.exists === "function" ? s.exists() : s.exists;
  return exists ? { path: s.ref.path, exists: true, data: normMap(s.data()) } : { path: s.ref.path, exists: false };
}

// codeOf is what an SDK reports for a failed call: firebase-admin a gRPC status number,
// the Firebase SDK a name ("not-found").
export function codeOf(e) {
  return e?.code ?? `no code: ${e}`;
}

export async function code(p) {
  try {
    await p;
    return "ok";
  } catch (e) {
    return codeOf(e);
  }
}

export async function expectCode(p, ...want) {
  const c = await code(p);
  if (!want.includes(c)) throw new Error(`want ${want.join(" or ")}, got ${c}`);
  return c;
}

// nonEmpty runs each named async query in name order; each is chosen to find something,
// so a client that silently reads nothing fails instead of comparing equal.
export async function nonEmpty(qs) {
  const out = {};
  for (const name of Object.keys(qs).sort()) {
    const res = await qs[name]();
    if (res.length === 0) throw new Error(`${name}: found nothing; the scenario wants a non-empty answer`);
    out[name] = res;
  }
  return out;
}

// until resolves with the first value of subscribe's callback that satisfies want, then
// unsubscribes. subscribe(onNext, onError) returns the unsubscribe function.
export function until(subscribe, want, what) {
  return new Promise((resolve, reject) => {
    let unsub = null;
    let done = false;
    const finish = (f) => {
      if (done) return;
      done = true;
      if (unsub) unsub();
      else queueMicrotask(() => unsub && unsub());
      f();
    };
    unsub = subscribe(
      (v) => { if (want(v)) finish(() => resolve(v)); },
      (e) => finish(() => reject(new Error(`${what}: listener failed: ${codeOf(e)} ${e.message ?? ""}`))),
    );
    if (done) unsub();
  });
}

// SCENARIO_TIMEOUT_MS bounds one scenario, so a client that hangs (the symptom of a
// proxy that does not speak its protocol) is reported as that scenario's failure while
// the others still run; after MAX_TIMEOUTS hung scenarios the rest are reported as not
// run rather than waited for.
const SCENARIO_TIMEOUT_MS = Number(process.env.SCENARIO_TIMEOUT_MS || 60000);
const MAX_TIMEOUTS = 3;

export async function runAll(scenarios) {
  const out = {};
  let timeouts = 0;
  for (const [name, run] of scenarios) {
    if (timeouts >= MAX_TIMEOUTS) {
      out[name] = { failed: `not run: ${timeouts} earlier scenarios timed out` };
      continue;
    }
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        timeouts++;
        reject(new Error(`timed out after ${SCENARIO_TIMEOUT_MS} ms`));
      }, SCENARIO_TIMEOUT_MS);
    });
    try {
      out[name] = { result: await Promise.race([run(), timeout]) };
    } catch (e) {
      out[name] = { failed: `${e.code ?? ""} ${e.message ?? e}`.trim() };
    } finally {
      clearTimeout(timer);
    }
  }
  // Exit only once the output is flushed: stdout to a pipe is asynchronous, and the
  // SDKs keep gRPC channels open that would otherwise hold the process.
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}
