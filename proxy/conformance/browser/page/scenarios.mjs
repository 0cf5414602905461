// The scenarios the browser suite runs, written once for both SDKs: fs is the module
// namespace of firebase/firestore (full) or firebase/firestore/lite. The page calls
// window.harvest.start(cfg) once, then window.harvest.run(phase) for each phase; each
// returns {scenario: {result} | {failed}} with results normalised so that a direct and a
// proxied run compare byte for byte (automatic ids and server times differ by nature).
//
// Phases:
//   main   get, query, add, set, update, delete, batch, transaction, count, errors,
//          and (full SDK) onSnapshot seeing a later write, and listening again after
//          unsubscribing;
//   warm   the reads that "repeat" makes, once, so the proxy can cache them;
//   repeat the same reads again, several times (the suite checks the upstream meter
//          did not move during this phase, for the lite SDK).

const SERVER_TIME_WINDOW_MS = 30 * 60 * 1000;

// withTimeout fails a scenario that hangs (an SDK retrying forever against a proxy that
// does not answer), so the suite reports it instead of waiting for its own deadline.
function withTimeout(p, ms) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no outcome within ${ms} ms`), { code: "timeout" })), ms);
  })]).finally(() => clearTimeout(timer));
}

export function install(sdk, initializeApp, fs) {
  let db;
  const full = sdk === "full";

  function norm(v) {
    if (v === null || v === undefined) return { null: true };
    if (typeof v === "boolean") return { bool: v };
    if (typeof v === "number") return { number: v };
    if (typeof v === "string") return { string: v };
    if (v instanceof fs.Timestamp) {
      if (Math.abs(Date.now() - v.toMillis()) < SERVER_TIME_WINDOW_MS) return { time: "<server time>" };
      return { time: v.toDate().toISOString() };
    }
    if (v instanceof fs.DocumentReference) return { ref: v.path };
    if (Array.isArray(v)) return { array: v.map(norm) };
    if (typeof v === "object") {
      const out = {};
      for (const k of Object.keys(v).sort()) out[k] = norm(v[k]);
      return { map: out };
    }
    return { other: String(v) };
  }
  const snap = (s) => (s.exists() ? { id: s.id, data: norm(s.data()) } : { id: s.id, missing: true });
  const snaps = (qs) => qs.docs.map(snap);
  const code = (e) => (e && e.code) || String(e);

  const col = (name) => fs.collection(db, name);
  const ref = (path) => fs.doc(db, path);
  const getCount = fs.getCountFromServer || fs.getCount;

  // A value seen by onSnapshot: resolve when pred(snapshot) holds, skipping local
  // (pending) states, so only what the server confirmed is compared.
  function waitFor(target, pred, timeoutMs = 20000) {
    return new Promise((resolve, reject) => {
      let unsub = () => {};
      const timer = setTimeout(() => { unsub(); reject(new Error("onSnapshot: timed out")); }, timeoutMs);
      // Metadata changes too: the first state may come from the local cache, and the
      // server's confirmation of the same data is only a metadata change.
      unsub = fs.onSnapshot(target, { includeMetadataChanges: true }, (s) => {
        if (s.metadata.hasPendingWrites || s.metadata.fromCache) return;
        if (pred(s)) { clearTimeout(timer); unsub(); resolve(s); }
      }, (e) => { clearTimeout(timer); reject(e); });
    });
  }

  const scenarios = {
    main: [
      ["set", async () => {
        await fs.setDoc(ref("products/p1"), { name: "apple", price: 3, farmer: "f1", tags: ["fruit"] });
        await fs.setDoc(ref("products/p2"), { name: "pear", price: 5, farmer: "f1" });
        await fs.setDoc(ref("products/p3"), { name: "plum", price: 7, farmer: "f2" });
        await fs.setDoc(ref("farmers/f1"), { name: "Ada", since: fs.Timestamp.fromMillis(1577836800000) });
        return "ok";
      }],
      ["get", async () => snap(await fs.getDoc(ref("products/p1")))],
      ["getMissing", async () => snap(await fs.getDoc(ref("products/none")))],
      ["setMerge", async () => {
        await fs.setDoc(ref("farmers/f1"), { region: "north", stamp: fs.serverTimestamp() }, { merge: true });
        return snap(await fs.getDoc(ref("farmers/f1")));
      }],
      ["add", async () => {
        const r = await fs.addDoc(col("orders"), { product: "p1", qty: 2 });
        const s = snap(await fs.getDoc(r));
        return { idLength: r.id.length, data: s.data };
      }],
      ["update", async () => {
        await fs.updateDoc(ref("products/p1"), { price: 4, "stock.count": 10, tags: fs.arrayUnion("red") });
        return snap(await fs.getDoc(ref("products/p1")));
      }],
      ["updateMissing", async () => {
        try { await fs.updateDoc(ref("products/none"), { price: 1 }); return "no error"; }
        catch (e) { return { error: code(e) }; }
      }],
      ["query", async () => snaps(await fs.getDocs(fs.query(col("products"),
        fs.where("price", ">=", 4), fs.orderBy("price"), fs.limit(10))))],
      ["queryByFarmer", async () => snaps(await fs.getDocs(fs.query(col("products"),
        fs.where("farmer", "==", "f1"))))],
      ["delete", async () => {
        await fs.deleteDoc(ref("products/p3"));
        return snap(await fs.getDoc(ref("products/p3")));
      }],
      ["batch", async () => {
        const b = fs.writeBatch(db);
        b.set(ref("products/p4"), { name: "fig", price: 9, farmer: "f2" });
        b.update(ref("products/p2"), { price: 6 });
        b.delete(ref("orders/none"));
        await b.commit();
        return snaps(await fs.getDocs(fs.query(col("products"), fs.orderBy("price"))));
      }],
      ["transaction", async () => {
        const seen = await fs.runTransaction(db, async (tx) => {
          const s = await tx.get(ref("products/p1"));
          tx.update(ref("products/p1"), { price: s.data().price + 1 });
          tx.set(ref("products/p5"), { name: "kiwi", price: 2, farmer: "f1" });
          return s.data().price;
        });
        return { seen, after: snap(await fs.getDoc(ref("products/p1"))) };
      }],
      ["count", async () => (await getCount(fs.query(col("products")))).data().count],
      ["countWhere", async () => (await getCount(fs.query(col("products"), fs.where("farmer", "==", "f1")))).data().count],
      ["snapshotSeesLaterWrite", async () => {
        if (!full) return "lite: no listeners";
        const first = await waitFor(ref("products/p2"), () => true);
        const later = waitFor(ref("products/p2"), (s) => s.data()?.price === 11);
        await fs.updateDoc(ref("products/p2"), { price: 11 });
        return { first: snap(first), later: snap(await later) };
      }],
      ["querySnapshotSeesLaterAdd", async () => {
        if (!full) return "lite: no listeners";
        const q = fs.query(col("products"), fs.where("farmer", "==", "f3"));
        const first = await waitFor(q, () => true);
        const later = waitFor(q, (s) => s.size === 1);
        await fs.setDoc(ref("products/p6"), { name: "lime", price: 1, farmer: "f3" });
        return { first: snaps(first), later: snaps(await later) };
      }],
      ["snapshotRelisten", async () => {
        // Listen, see a later add, unsubscribe (the SDK removes the target), change
        // the data while nobody listens, listen again (the target is added again,
        // with its resume token): the server's current state, then a later add.
        if (!full) return "lite: no listeners";
        const q = fs.query(col("products"), fs.where("farmer", "==", "f4"));
        await fs.setDoc(ref("products/p7"), { name: "date", price: 1, farmer: "f4" });
        const first = await waitFor(q, (s) => s.size === 1);
        const later = waitFor(q, (s) => s.size === 2);
        await fs.setDoc(ref("products/p8"), { name: "yuzu", price: 2, farmer: "f4" });
        const seen = await later;
        await fs.deleteDoc(ref("products/p7"));
        const again = await waitFor(q, (s) => s.size === 1);
        const after = waitFor(q, (s) => s.size === 2);
        await fs.setDoc(ref("products/p9"), { name: "sloe", price: 3, farmer: "f4" });
        return { first: snaps(first), later: snaps(seen), again: snaps(again), after: snaps(await after) };
      }],
    ],
    warm: [],
    repeat: [],
  };
  // The reads of "warm" and "repeat": the same requests, so the second time every one of
  // them can be answered from the proxy's cache.
  const reads = [
    ["readDoc", async () => snap(await fs.getDoc(ref("products/p1")))],
    ["readFarmer", async () => snap(await fs.getDoc(ref("farmers/f1")))],
    ["readQuery", async () => snaps(await fs.getDocs(fs.query(col("products"), fs.where("farmer", "==", "f1"))))],
  ];
  scenarios.warm = reads;
  for (let i = 0; i < 3; i++) scenarios.repeat.push(...reads.map(([n, f]) => [`${n}#${i}`, f]));

  window.harvest = {
    sdk,
    async start({ projectId, host, port, longPolling }) {
      const app = initializeApp({ projectId, apiKey: "browser-conformance-key", appId: "1:1:web:1" });
      // longPolling: the full SDK's long-poll mode (backchannel GETs with TYPE=xmlhttp
      // answered one chunk at a time) instead of a streaming backchannel.
      db = longPolling ? fs.initializeFirestore(app, { experimentalForceLongPolling: true }) : fs.getFirestore(app);
      fs.connectFirestoreEmulator(db, host, port);
      return sdk;
    },
    async run(phase) {
      const out = {};
      for (const [name, fn] of scenarios[phase]) {
        try { out[name] = { result: await withTimeout(fn(), 30000) }; }
        catch (e) { out[name] = { failed: code(e) + ": " + (e && e.message) }; }
      }
      return out;
    },
    async stop() { await fs.terminate(db); },
  };
}
