// Runs graphql-http's serverAudits against a served Concord and prints one JSON line:
// [{id, name, status: "ok" | "warn" | "error", reason}].
// Usage: node graphql_http_audit.mjs <node_modules folder> <GraphQL URL>
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, url] = process.argv.slice(2);
const entry = path.join(modules, 'graphql-http', 'lib', 'index.mjs');
const { serverAudits } = await import(pathToFileURL(entry).href);

const results = [];
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  results.push({ id: audit.id, name: audit.name, status: result.status, reason: result.reason ?? null });
}
console.log(JSON.stringify(results));
