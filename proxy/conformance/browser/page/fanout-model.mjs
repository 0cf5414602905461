// What the browser fan-out proof (fanout.mjs, page/fanout.mjs) shares between the page
// and the runner: how a snapshot's documents become a comparable state, the model of
// the collection, and the writes, in order. Plain JavaScript values only (strings,
// numbers, arrays, maps): the page's SDK returns the same for them.

export function norm(v) {
  if (v === null || v === undefined) return { null: true };
  if (typeof v === "boolean") return { bool: v };
  if (typeof v === "number") return { number: v };
  if (typeof v === "string") return { string: v };
  if (Array.isArray(v)) return { array: v.map(norm) };
  if (typeof v === "object") return { map: normMap(v) };
  return { other: String(v) };
}

export function normMap(m) {
  const out = {};
  for (const k of Object.keys(m).sort()) out[k] = norm(m[k]);
  return out;
}

// key is a state's comparable text: [[id, normalised data], ...] sorted by id.
export const key = (state) => JSON.stringify(state);

// The shared query: products where category == "fanout".
export const inCatalogue = (d) => d.category === "fanout";

export class Model {
  constructor() { this.docs = new Map(); }
  set(id, data) { this.docs.set(id, structuredClone(data)); }
  update(id, patch) { this.docs.set(id, { ...this.docs.get(id), ...patch }); }
  delete(id) { this.docs.delete(id); }
  state() {
    return [...this.docs.keys()].sort().filter((id) => inCatalogue(this.docs.get(id))).map((id) => [id, normMap(this.docs.get(id))]);
  }
}

// seed is the collection before anyone listens: five matching products, one other.
export const seed = [
  ...[1, 2, 3, 4, 5].map((i) => ["set", `f${i}`, { name: `item ${i}`, price: i * 10, category: "fanout", tags: ["a", i] }]),
  ["set", "o1", { name: "elsewhere", price: 1, category: "other" }],
];

// steps are the writes after it: a change, a removal (an update that takes a document
// out of the query), a delete, and a new matching document.
export const steps = [
  ["change", ["update", "f1", { price: 11 }]],
  ["removal", ["update", "f2", { category: "other" }]],
  ["delete", ["delete", "f3"]],
  ["add", ["set", "f6", { name: "item 6", price: 60, category: "fanout", tags: [] }]],
];

export function apply(model, [op, id, data]) {
  if (op === "set") model.set(id, data);
  else if (op === "update") model.update(id, data);
  else model.delete(id);
}
