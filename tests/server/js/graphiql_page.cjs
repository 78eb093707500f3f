// Runs the inline script of Concord's GraphiQL page (read from stdin) in a VM, with the
// vendored libraries replaced by recorders, and reports how the page configures the
// graphql-ws client and what it shows for a socket the server closed.
"use strict";
const vm = require("vm");

const html = require("fs").readFileSync(0, "utf8");
const inline = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
const page = inline[inline.length - 1];

const recorded = { warnings: [] };
const socketClient = {
  subscribe(payload, sink) {
    recorded.sink = sink;
    return () => {};
  },
  dispose() {},
};
const context = {
  URL,
  window: {
    location: { href: "http://concord.test/graphql" },
    console: { warn: (message) => recorded.warnings.push(String(message)) },
  },
  document: { getElementById: () => ({}) },
  React: { createElement: () => ({}) },
  ReactDOM: { createRoot: () => ({ render() {} }) },
  GraphiQL: {
    createFetcher(options) {
      recorded.fetcherOptions = options;
      return () => ({});
    },
  },
  graphqlWs: {
    createClient(options) {
      recorded.options = options;
      return socketClient;
    },
  },
};
vm.createContext(context);
vm.runInContext(page, context);

const api = context.window.concordGraphiQL;
api.fetcher({ query: "subscription { x }" }, { headers: { Authorization: "Bearer t" } });
const options = recorded.options;

const shouldRetry = {};
for (const code of [1000, 1001, 1006, 1009, 1011, 4400, 4401, 4403, 4408, 4500]) {
  shouldRetry[code] = options.shouldRetry
    ? options.shouldRetry({ code, reason: "r", wasClean: true })
    : null;
}
shouldRetry.networkError = options.shouldRetry ? options.shouldRetry(new Error("down")) : null;

// What GraphiQL is handed when the server closes the socket with 4403.
let shown = null;
recorded.fetcherOptions.wsClient.subscribe(
  { query: "subscription { x }" },
  { next() {}, complete() {}, error: (error) => (shown = error) }
);
recorded.sink.error({ code: 4403, reason: "Forbidden", wasClean: true });
if (options.on && options.on.closed) {
  options.on.closed({ code: 4403, reason: "Forbidden", wasClean: true });
}

process.stdout.write(
  JSON.stringify({
    retryAttempts: options.retryAttempts === undefined ? null : options.retryAttempts,
    shouldRetry,
    // The page runs in another realm: its Error is not this one's.
    shown: shown && shown.name === "Error" ? { error: shown.message } : { other: String(shown) },
    onClosed: Boolean(options.on && options.on.closed),
    warnings: recorded.warnings,
    lastClose: api.lastClose ? api.lastClose() : null,
  })
);
