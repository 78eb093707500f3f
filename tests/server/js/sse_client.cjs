// Drives one operation through the graphql-sse reference client ("distinct connections"
// mode) and prints what the client hands the application, one JSON object per line:
//   {"connected": true}        the event stream was accepted
//   {"next": <result>}         each execution result, in order
//   {"complete": true}         the server completed the operation
//   {"stopped": true}          `take` results arrived and the client unsubscribed
//   {"error": "...", "status": 401}   the client gave up (no retries here)
// Usage: node sse_client.cjs '{"url": ..., "query": ..., "variables": {...},
//                              "headers": {...}, "take": N}'
"use strict";
const { createClient } = require("graphql-sse");

const options = JSON.parse(process.argv[2]);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const client = createClient({
  url: options.url,
  headers: options.headers || {},
  retryAttempts: 0,
  on: { connected: () => print({ connected: true }) },
});

(async () => {
  const results = client.iterate({ query: options.query, variables: options.variables || {} });
  let taken = 0;
  try {
    for await (const result of results) {
      print({ next: result });
      taken += 1;
      if (options.take && taken >= options.take) {
        print({ stopped: true });
        return;
      }
    }
    print({ complete: true });
  } catch (error) {
    print({
      error: String((error && error.message) || error),
      status: error && error.response ? error.response.status : null,
    });
  } finally {
    client.dispose();
  }
})();
