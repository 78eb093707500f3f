// The Concord demo board: a client of the public GraphQL API and nothing else.
//
// Queries and mutations: POST /graphql with the access token. Live: graphql-transport-ws on the
// same path (GraphiQL's vendored graphql-ws client), authenticated in connection_init, with the
// workspace's event cursor passed as `after` on every resubscription so nothing is missed or
// repeated. Each window keeps its own session (sessionStorage), so two windows can be two people.
(function () {
  "use strict";

  var endpoint = new URL("/graphql", window.location.href);
  var wsUrl = new URL(endpoint.href);
  wsUrl.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";
  var STORAGE_KEY = "concord-demo-session";
  var FIELDS = ["title", "description", "status"];

  var state = {
    session: JSON.parse(window.sessionStorage.getItem(STORAGE_KEY) || "null"),
    seen: "",            // X-Concord-Seen from our last mutation: read our own writes
    boards: [],          // [{id, name, workspace: {id, name}}]
    board: null,         // the board shown, as last read
    cursor: {},          // workspace id -> cursor of the last event received
    lastSeq: {},         // workspace id -> its seq: graphql-ws resends the original
                         // subscription after a reconnect, so older events are dropped here
    editing: null,       // {card: as it was when editing began, mine: {field: value}}
    ws: null,
    stopEvents: null,
    stopPresence: null,
    resume: false        // resubscribe to events after the socket reconnects
  };

  function $(id) { return document.getElementById(id); }

  function show(element, visible) { element.hidden = !visible; }

  // ---- GraphQL over HTTP -------------------------------------------------------------------

  async function gql(query, variables, retried) {
    var headers = { "content-type": "application/json" };
    if (state.session) headers.authorization = "Bearer " + state.session.accessToken;
    if (state.seen) headers["x-concord-seen"] = state.seen;
    var response = await fetch(endpoint.href, {
      method: "POST", headers: headers, body: JSON.stringify({ query: query, variables: variables || {} })
    });
    var seen = response.headers.get("x-concord-seen");
    if (seen) state.seen = seen;
    if (response.status === 401 && state.session && !retried) {
      await refresh();
      return gql(query, variables, true);
    }
    var body = await response.json();
    if (body.errors && body.errors.length) {
      throw new Error(body.errors.map(function (e) { return e.message; }).join("; "));
    }
    return body.data;
  }

  async function refresh() {
    var data = await gql(
      "mutation($t: String!) { refreshToken(token: $t) { __typename " +
      "... on AuthPayload { accessToken refreshToken user { id displayName } } } }",
      { t: state.session.refreshToken }, true);
    var result = data.refreshToken;
    if (result.__typename !== "AuthPayload") { signOut(); throw new Error("Please sign in again."); }
    remember(result);
  }

  function remember(auth) {
    state.session = { accessToken: auth.accessToken, refreshToken: auth.refreshToken, user: auth.user };
    window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state.session));
  }

  // ---- signing in and out ------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      var data = await gql(
        "mutation($i: LoginInput!) { login(input: $i) { __typename " +
        "... on AuthPayload { accessToken refreshToken user { id displayName } } " +
        "... on UserError { message } } }",
        { i: { email: $("email").value, password: $("password").value } });
      if (data.login.__typename !== "AuthPayload") {
        $("sign-in-error").textContent = data.login.message;
        return;
      }
      remember(data.login);
      await start();
    } catch (error) {
      $("sign-in-error").textContent = error.message;
    }
  }

  function signOut() {
    stopLive();
    if (state.ws) { state.ws.dispose(); state.ws = null; }
    state.session = null;
    window.sessionStorage.removeItem(STORAGE_KEY);
    show($("app"), false);
    show($("sign-in"), true);
    show($("sign-out"), false);
    $("who").textContent = "";
  }

  // ---- the board ---------------------------------------------------------------------------

  var BOARD = "query($id: ID!) { board(id: $id) { id name workspace { id name } " +
    "cards(first: 100) { nodes { id version title description status position " +
    "assignee { displayName } } } } }";

  async function start() {
    show($("sign-in"), false);
    show($("app"), true);
    show($("sign-out"), true);
    $("who").textContent = "Signed in as " + state.session.user.displayName;
    // Small pages: a query's cost (MAX_QUERY_COST) multiplies each selection by its `first`.
    var data = await gql("{ workspaces(first: 20) { nodes { id name boards(first: 20) { nodes { id name } } } } }");
    state.boards = [];
    data.workspaces.nodes.forEach(function (workspace) {
      workspace.boards.nodes.forEach(function (board) {
        state.boards.push({ id: board.id, name: board.name, workspace: { id: workspace.id, name: workspace.name } });
      });
    });
    var picker = $("board-picker");
    picker.textContent = "";
    state.boards.forEach(function (board) {
      var option = document.createElement("option");
      option.value = board.id;
      option.textContent = board.workspace.name + " / " + board.name;
      picker.appendChild(option);
    });
    if (!state.boards.length) {
      $("presence").textContent = "You are in no workspace yet: run concord seed-demo, or create one in GraphiQL.";
      return;
    }
    await openBoard(state.boards[0].id);
  }

  async function openBoard(boardId) {
    stopLive();
    closeEditor();
    await loadBoard(boardId);
    follow(state.board.workspace.id);
    watchPresence(boardId);
  }

  async function loadBoard(boardId, changedCardId) {
    var data = await gql(BOARD, { id: boardId });
    state.board = data.board;
    render(changedCardId);
  }

  function render(changedCardId) {
    document.querySelectorAll("#board .column ul").forEach(function (list) { list.textContent = ""; });
    state.board.cards.nodes.forEach(function (card) {
      var item = document.createElement("li");
      item.className = "card" + (card.id === changedCardId ? " changed" : "");
      item.dataset.cardId = card.id;
      item.dataset.testid = "card";
      var title = document.createElement("div");
      title.className = "title";
      title.textContent = card.title;
      var meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = (card.assignee ? card.assignee.displayName + " · " : "") + "version " + card.version;
      item.appendChild(title);
      if (card.description) {
        var description = document.createElement("div");
        description.className = "description";
        description.textContent = card.description;
        item.appendChild(description);
      }
      item.appendChild(meta);
      item.addEventListener("click", function () { openEditor(card); });
      var column = document.querySelector('#board .column[data-status="' + card.status + '"] ul');
      column.appendChild(item);
    });
  }

  // ---- editing, conflicts, merge and reload ------------------------------------------------

  function openEditor(card) {
    state.editing = { card: card, mine: {} };
    $("edit-title").value = card.title;
    $("edit-description").value = card.description;
    $("edit-status").value = card.status;
    $("editor-version").textContent = "(editing version " + card.version + ")";
    $("editor-message").textContent = "";
    show($("conflict"), false);
    show($("editor"), true);
    $("edit-title").focus();
  }

  function closeEditor() {
    state.editing = null;
    show($("editor"), false);
  }

  function myChanges() {
    var base = state.editing.card;
    var values = { title: $("edit-title").value, description: $("edit-description").value, status: $("edit-status").value };
    var changes = {};
    FIELDS.forEach(function (field) { if (values[field] !== base[field]) changes[field] = values[field]; });
    return changes;
  }

  var UPDATE = "mutation($i: UpdateCardInput!) { updateCard(input: $i) { __typename " +
    "... on CardPayload { card { id version title description status } } " +
    "... on VersionConflict { message changedFields currentVersion " +
    "current { version ... on Card { title description status } } } " +
    "... on UserError { message } } }";

  async function save(event, strategy) {
    if (event) event.preventDefault();
    var changes = myChanges();
    if (!Object.keys(changes).length) { $("editor-message").textContent = "Nothing changed."; return; }
    state.editing.mine = changes;
    var input = Object.assign({ id: state.editing.card.id, expectedVersion: state.editing.card.version }, changes);
    if (strategy) input.onConflict = strategy;
    var result = (await gql(UPDATE, { i: input })).updateCard;
    if (result.__typename === "CardPayload") {
      $("editor-message").textContent = "Saved (version " + result.card.version + ").";
      show($("conflict"), false);
      state.editing.card = Object.assign({}, state.editing.card, result.card);
      $("editor-version").textContent = "(editing version " + result.card.version + ")";
      await loadBoard(state.board.id, result.card.id);
    } else if (result.__typename === "VersionConflict") {
      showConflict(result, changes);
    } else {
      $("editor-message").textContent = result.message;
    }
  }

  function showConflict(conflict, changes) {
    var overlap = conflict.changedFields.filter(function (field) { return field in changes; });
    $("editor-message").textContent = "";
    $("conflict-text").textContent = "Someone changed this card while you were editing it (" +
      conflict.changedFields.join(", ") + "). " + (overlap.length
        ? "You both changed " + overlap.join(", ") + ": merging is not possible; reload theirs and edit again."
        : "Your changes touch other fields: you can merge them into the current card.");
    var rows = $("conflict-fields");
    rows.textContent = "";
    FIELDS.forEach(function (field) {
      if (conflict.changedFields.indexOf(field) < 0 && !(field in changes)) return;
      var row = document.createElement("tr");
      [field, conflict.current[field], field in changes ? changes[field] : "(unchanged)"].forEach(function (text) {
        var cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      });
      rows.appendChild(row);
    });
    $("merge").disabled = overlap.length > 0;
    state.editing.conflict = conflict;
    show($("conflict"), true);
  }

  async function merge() { await save(null, "MERGE"); }

  function reload() {
    var conflict = state.editing.conflict;
    var card = Object.assign({}, state.editing.card, conflict.current, { version: conflict.currentVersion });
    openEditor(card);
    $("editor-message").textContent = "Reloaded: this is the card as it is now (version " + card.version + ").";
  }

  // ---- live: events and presence over graphql-transport-ws ---------------------------------

  function socket() {
    if (state.ws) return state.ws;
    state.ws = graphqlWs.createClient({
      url: wsUrl.href,
      lazy: true,
      retryAttempts: Infinity,
      shouldRetry: function () { return true; },
      // Read the token at each (re)connection: it may have been refreshed meanwhile.
      connectionParams: async function () {
        return { authorization: "Bearer " + state.session.accessToken };
      },
      on: {
        connected: function () {
          $("live").textContent = "live";
          $("live").classList.add("on");
          if (state.resume) { state.resume = false; resumeAfterReconnect(); }
        },
        closed: async function (event) {
          $("live").textContent = "reconnecting…";
          $("live").classList.remove("on");
          // graphql-ws would resend the event subscription as first sent (its old `after`):
          // end it here and subscribe again, with the latest cursor, once reconnected.
          if (state.stopEvents) { state.stopEvents(); state.stopEvents = null; state.resume = true; }
          // 4403: the token expired or was refused; refresh before the client reconnects.
          if (event && event.code === 4403 && state.session) { try { await refresh(); } catch (e) { /* signed out */ } }
        }
      }
    });
    return state.ws;
  }

  var EVENTS = "subscription($w: ID!, $after: String) { workspaceEvents(workspaceId: $w, after: $after) { " +
    "seq cursor type entityType entityId actor { displayName } changes { field } } }";

  function follow(workspaceId) {
    var stopped = false;
    var unsubscribe = socket().subscribe(
      { query: EVENTS, variables: { w: workspaceId, after: state.cursor[workspaceId] || null } },
      {
        next: function (result) {
          if (!result.data) return;  // SLOW_CONSUMER / CURSOR_EXPIRED come as errors; complete follows
          var event = result.data.workspaceEvents;
          if (event.seq <= (state.lastSeq[workspaceId] || 0)) return;  // seen already
          state.lastSeq[workspaceId] = event.seq;
          state.cursor[workspaceId] = event.cursor;
          logEvent(event);
          if (state.board && (event.entityType === "Card" || event.entityType === "Board")) {
            loadBoard(state.board.id, event.entityId);
          }
        },
        error: function () { if (!stopped) setTimeout(resume, 1000); },
        complete: function () { if (!stopped) setTimeout(resume, 200); }
      });
    function resume() { if (!stopped && state.board && state.board.workspace.id === workspaceId) state.stopEvents = follow(workspaceId); }
    state.stopEvents = function () { stopped = true; unsubscribe(); };
    return state.stopEvents;
  }

  function resumeAfterReconnect() {
    if (!state.board) return;
    loadBoard(state.board.id);  // whatever happened while disconnected
    follow(state.board.workspace.id);
  }

  function logEvent(event) {
    var item = document.createElement("li");
    item.value = event.seq;
    item.textContent = event.type + " by " + (event.actor ? event.actor.displayName : "someone") +
      (event.changes.length ? ": " + event.changes.map(function (c) { return c.field; }).join(", ") : "");
    var list = $("events");
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 12) list.removeChild(list.lastChild);
  }

  function watchPresence(boardId) {
    var unsubscribe = socket().subscribe(
      { query: "subscription($b: ID!) { presence(boardId: $b) { present { user { id displayName } } } }",
        variables: { b: boardId } },
      {
        next: function (result) {
          if (!result.data) return;
          var me = state.session.user.id;
          var names = result.data.presence.present.map(function (entry) {
            return entry.user.displayName + (entry.user.id === me ? " (you)" : "");
          });
          $("presence").textContent = "Looking at this board: " + names.join(", ");
        },
        error: function () {},
        complete: function () {}
      });
    state.stopPresence = unsubscribe;
  }

  function stopLive() {
    if (state.stopEvents) { state.stopEvents(); state.stopEvents = null; }
    if (state.stopPresence) { state.stopPresence(); state.stopPresence = null; }
  }

  // ---- wiring ------------------------------------------------------------------------------

  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("board-picker").addEventListener("change", function (event) { openBoard(event.target.value); });
  $("editor").addEventListener("submit", function (event) {
    save(event).catch(function (error) { $("editor-message").textContent = error.message; });
  });
  $("cancel").addEventListener("click", closeEditor);
  $("merge").addEventListener("click", function () {
    merge().catch(function (error) { $("editor-message").textContent = error.message; });
  });
  $("reload").addEventListener("click", reload);
  if (state.session) start().catch(function () { signOut(); });
})();
