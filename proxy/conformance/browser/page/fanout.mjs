// The page of the browser fan-out proof (fanout.mjs): the full SDK (WebChannel) listening
// with onSnapshot to the shared query, recording every snapshot, and, on the direct page,
// making the writes.
import { initializeApp } from "firebase/app";
import * as fs from "firebase/firestore";
import { key, normMap } from "./fanout-model.mjs";

let db;
const events = [];
let latest = null;
let error = null;

window.fanout = {
  start({ projectId, host, port, longPolling }) {
    const app = initializeApp({ projectId, apiKey: "browser-fanout-key", appId: "1:1:web:1" });
    db = longPolling ? fs.initializeFirestore(app, { experimentalForceLongPolling: true }) : fs.getFirestore(app);
    fs.connectFirestoreEmulator(db, host, port);
  },
  listen() {
    const q = fs.query(fs.collection(db, "products"), fs.where("category", "==", "fanout"));
    fs.onSnapshot(q, { includeMetadataChanges: true }, (s) => {
      const state = key(s.docs.map((d) => [d.id, normMap(d.data())]));
      events.push({ fromCache: s.metadata.fromCache, state });
      if (!s.metadata.fromCache) latest = state;
    }, (e) => { error = e.code || String(e); events.push({ error }); });
  },
  // status is what the runner polls: the latest server state, the error, how many events.
  status() { return { latest, error, n: events.length }; },
  events(from) { return events.slice(from); },
  async write([op, id, data]) {
    const ref = fs.doc(db, "products/" + id);
    if (op === "set") await fs.setDoc(ref, data);
    else if (op === "update") await fs.updateDoc(ref, data);
    else await fs.deleteDoc(ref);
  },
  async stop() { await fs.terminate(db); },
};
