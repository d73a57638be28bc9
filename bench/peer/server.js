// Benchmark peer for abilitysync: the original TypeScript app's registration
// path (infraxa-api.md §2.2-2.5 and §3), as one Node process with node:http.
//
//   POST /v1/abilities   one ability object, as abilitysync takes it
//                        -> 201 {"ability_id", "vector_id"}
//   GET  /healthz        200 {"ok": true}
//   GET  /_stats         counters (registrations, errors by kind), for bench/compare.sh
//
// Per ability, in the original's order: vector_id = |readInt32BE(sha256(ability_id))|;
// blob abilities_<service_name, every char outside [A-Za-z0-9_] -> '_'>; the
// tenant and the blob are created once (cached); the vector goes to the vector
// DB with fetch (Node 20's undici, default keep-alive agent); only after it
// succeeded, a drizzle-orm upsert into `abilities` over a node-postgres Pool.
// As in the original, a Postgres failure is logged and not thrown (the caller
// still gets its vector_id); a vector DB failure fails the request (the
// original fell back to a JSON file backup; here: 502).
//
// Environment:
//   PORT              port to listen on (default 4111, the original's); 0 picks one
//   HOST              address to listen on (default 127.0.0.1)
//   DATABASE_URL      Postgres; unset: vector-DB-only, as the original
//   VECTOR_DB_API     vector DB base URL (default https://dev-beta.infraxa.ai)
//   VECTOR_DB_TENANT  tenant (default reverse_engineer)
//   EMBEDDING_DIM     dimension blobs are created with (default 3072)
//   PG_POOL_SIZE      Postgres connections (default 10: node-postgres' own default, what a
//                     plain drizzle(DATABASE_URL) gets; abilitysync's PG_POOL_SIZE is 4)
//   UPSERT_SET        excluded (default): DO UPDATE SET col = excluded.col, each value
//                     sent once; values: SET col = $n, the row's values bound a second
//                     time (the embedding twice on the wire), the plainer drizzle idiom
//   LOG_LEVEL         debug: the original's five log lines per ability (default info:
//                     start-up and errors only, as abilitysync logs requests at debug)
//
// It prints "listening on http://HOST:PORT" once it accepts connections.
import { createHash } from "node:crypto";
import http from "node:http";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { abilities } from "./schema.js";

const env = process.env;
const PORT = Number(env.PORT ?? 4111);
const HOST = env.HOST ?? "127.0.0.1";
const VECTOR_DB_API = (env.VECTOR_DB_API ?? "https://dev-beta.infraxa.ai").replace(/\/+$/, "");
const TENANT = env.VECTOR_DB_TENANT ?? "reverse_engineer";
const DIM = Number(env.EMBEDDING_DIM ?? 3072);
const POOL_SIZE = Number(env.PG_POOL_SIZE ?? 10);
const UPSERT_SET = env.UPSERT_SET ?? "excluded";
const DEBUG = env.LOG_LEVEL === "debug";
const MAX_BODY = 16 * 1024 * 1024; // abilitysync's MAX_BODY_BYTES default
const VDB_TIMEOUT_MS = 10000; // the original's callers gave up after 10 s

if (UPSERT_SET !== "excluded" && UPSERT_SET !== "values") {
  console.error(`peer: UPSERT_SET must be excluded or values, got ${UPSERT_SET}`);
  process.exit(2);
}

const stats = { registered: 0, bad_requests: 0, vdb_errors: 0, pg_errors: 0 };

// ---- Postgres (drizzle-orm over a node-postgres Pool) --------------------------

const pool = env.DATABASE_URL ? new pg.Pool({ connectionString: env.DATABASE_URL, max: POOL_SIZE }) : null;
pool?.on("error", (e) => console.error(`[DB] idle client error: ${e.message}`));
const db = pool ? drizzle(pool) : null;
console.log(`[DB] PostgreSQL configured: ${db !== null}`);

const excluded = (col) => sql.raw(`excluded."${col}"`);

async function storeInPostgres(row) {
  const set =
    UPSERT_SET === "excluded"
      ? {
          vector_id: excluded("vector_id"),
          ability_name: excluded("ability_name"),
          service_name: excluded("service_name"),
          description: excluded("description"),
          embedding: excluded("embedding"),
          dynamic_header_keys: excluded("dynamic_header_keys"),
          dynamic_headers_required: excluded("dynamic_headers_required"),
          metadata: excluded("metadata"),
          updated_at: sql`now()`,
        }
      : { ...row, ability_id: undefined, updated_at: sql`now()` };
  await db.insert(abilities).values(row).onConflictDoUpdate({ target: abilities.ability_id, set });
}

// ---- the vector DB (fetch) -----------------------------------------------------

function generateNumericId(abilityId) {
  const hash = createHash("sha256").update(abilityId).digest();
  return Math.abs(hash.readInt32BE(0));
}

const blobName = (serviceName) => `abilities_${serviceName.replace(/[^A-Za-z0-9_]/g, "_")}`;

async function vdb(method, path, body) {
  const res = await fetch(`${VECTOR_DB_API}${path}`, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(VDB_TIMEOUT_MS),
  });
  const text = await res.text(); // read to the end: the connection goes back to the pool
  return { status: res.status, ok: res.ok, text };
}

// "Already exists" counts as success: the emulator answers 409 (or 400 with --exists-status).
const created = (r) => r.ok || r.status === 409 || (r.status === 400 && /exist/i.test(r.text));

let tenantReady = null;
const blobsReady = new Map();

function ensureTenant() {
  tenantReady ??= vdb("POST", "/tenants", { tenant_id: TENANT }).then((r) => {
    if (!created(r)) throw new Error(`create tenant ${TENANT}: HTTP ${r.status} ${r.text}`);
  });
  return tenantReady.catch((e) => {
    tenantReady = null;
    throw e;
  });
}

function ensureBlob(blob) {
  let p = blobsReady.get(blob);
  if (!p) {
    p = ensureTenant()
      .then(() => vdb("POST", `/tenants/${TENANT}/blobs`, { blob_id: blob, blob_type: "dense", dimension: DIM }))
      .then((r) => {
        if (!created(r)) throw new Error(`create blob ${blob}: HTTP ${r.status} ${r.text}`);
      });
    blobsReady.set(blob, p);
    p.catch(() => blobsReady.delete(blob));
  }
  return p;
}

// ---- storeAbility() --------------------------------------------------------------

async function storeAbility(a) {
  if (DEBUG) console.log(`[VectorDB] Storing ability: ${a.ability_name}`);
  const vectorId = generateNumericId(a.ability_id);
  if (DEBUG) console.log(`[VectorDB] Generated vector ID: ${vectorId}`);
  const metadata = a.metadata ?? {};
  const blob = blobName(a.service_name);
  await ensureBlob(blob);
  const r = await vdb("POST", `/tenants/${TENANT}/blobs/${blob}/vectors`, {
    vectors: [a.embedding],
    ids: [vectorId],
    attributes: [
      {
        ability_id: a.ability_id,
        ability_name: a.ability_name,
        service_name: a.service_name,
        description: a.description,
        ...metadata,
      },
    ],
  });
  if (!r.ok) throw new Error(`add vector ${vectorId} to ${blob}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  if (DEBUG) console.log("[VectorDB] Successfully stored ability in Infraxa");

  if (db) {
    // Infraxa first, Postgres second; Postgres errors are logged, not thrown.
    try {
      if (DEBUG) console.log(`[DB] Storing ability in PostgreSQL: ${a.ability_id}`);
      const dynamicHeaderKeys = metadata.dynamic_header_keys ?? [];
      await storeInPostgres({
        ability_id: a.ability_id,
        vector_id: vectorId,
        ability_name: a.ability_name,
        service_name: a.service_name,
        description: a.description,
        embedding: a.embedding,
        dynamic_header_keys: dynamicHeaderKeys,
        dynamic_headers_required: dynamicHeaderKeys.length > 0,
        metadata,
      });
      if (DEBUG) console.log("[DB] Successfully stored ability in PostgreSQL");
    } catch (e) {
      stats.pg_errors++;
      console.error(`[DB] Error storing ability in PostgreSQL: ${a.ability_id}: ${e.message}`);
    }
  }
  return vectorId;
}

// What the original checked: the fields are there; the embedding is an array.
function invalid(a) {
  if (a === null || typeof a !== "object" || Array.isArray(a)) return "body must be one ability object";
  for (const k of ["ability_id", "ability_name", "service_name", "description"]) {
    if (typeof a[k] !== "string" || a[k] === "") return `${k} is required (a string)`;
  }
  if (!Array.isArray(a.embedding)) return "embedding must be an array";
  if (a.metadata !== undefined && (a.metadata === null || typeof a.metadata !== "object" || Array.isArray(a.metadata)))
    return "metadata must be an object";
  return null;
}

// ---- HTTP ----------------------------------------------------------------------------

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error("body too large"), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

async function register(req, res) {
  let a;
  try {
    a = JSON.parse(await readBody(req));
  } catch (e) {
    stats.bad_requests++;
    return reply(res, e.status ?? 400, { error: e.status ? e.message : `invalid JSON: ${e.message}` });
  }
  const why = invalid(a);
  if (why) {
    stats.bad_requests++;
    return reply(res, 400, { error: why });
  }
  try {
    const vectorId = await storeAbility(a);
    stats.registered++;
    reply(res, 201, { ability_id: a.ability_id, vector_id: vectorId });
  } catch (e) {
    stats.vdb_errors++;
    console.error(`[VectorDB] Error storing ability ${a.ability_id}: ${e.message}`);
    reply(res, 502, { error: `vector DB: ${e.message}` });
  }
}

const server = http.createServer((req, res) => {
  const path = req.url.split("?", 1)[0];
  if (req.method === "POST" && path === "/v1/abilities") return void register(req, res);
  if (req.method === "GET" && path === "/healthz") return reply(res, 200, { ok: true });
  if (req.method === "GET" && path === "/_stats")
    return reply(res, 200, { ...stats, memory: process.memoryUsage() });
  reply(res, 404, { error: "not found" });
});

server.listen(PORT, HOST, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}; vector DB: ${VECTOR_DB_API} (tenant ${TENANT}); upsert SET: ${UPSERT_SET}`);
});

function shutdown(sig) {
  console.log(`${sig}: closing`);
  server.close(() => {
    (pool ? pool.end() : Promise.resolve()).then(() => process.exit(0));
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 10000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
