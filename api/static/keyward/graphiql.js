// Keyward's GraphiQL boot script (a file, not inline, so the page's CSP can forbid inline scripts).
// The token field becomes `Authorization: Bearer <token>`; an Authorization header set in GraphiQL's
// Headers tab wins over it. The token is kept in sessionStorage only (this tab, until it closes).
(function () {
  "use strict";
  var STORAGE_KEY = "keyward.graphiql.token";
  var input = document.getElementById("keyward-token-input");
  var form = document.getElementById("keyward-token");
  try {
    input.value = window.sessionStorage.getItem(STORAGE_KEY) || "";
  } catch (e) { /* storage disabled */ }
  input.addEventListener("input", function () {
    try {
      window.sessionStorage.setItem(STORAGE_KEY, input.value.trim());
    } catch (e) { /* storage disabled */ }
  });
  form.addEventListener("submit", function (event) { event.preventDefault(); });

  var endpoint = window.location.pathname;

  function hasHeader(headers, name) {
    return Object.keys(headers).some(function (key) { return key.toLowerCase() === name; });
  }

  function fetcher(params, options) {
    var headers = { "Content-Type": "application/json", Accept: "application/json" };
    var extra = (options && options.headers) || {};
    var token = input.value.trim();
    if (token && !hasHeader(extra, "authorization")) {
      headers.Authorization = "Bearer " + token;
    }
    Object.keys(extra).forEach(function (key) { headers[key] = String(extra[key]); });
    return fetch(endpoint, {
      method: "POST",
      headers: headers,
      body: JSON.stringify(params),
      credentials: "omit",
    }).then(function (response) {
      return response.text().then(function (text) {
        try {
          return JSON.parse(text);
        } catch (e) {
          return { errors: [{ message: "HTTP " + response.status + ": " + text }] };
        }
      });
    });
  }

  var defaultQuery = [
    "# Keyward GraphQL. Paste a token above (or set an Authorization header),",
    "# then run this query with the play button or Ctrl-Enter.",
    "{",
    "  viewer {",
    "    name",
    "    kind",
    "    productRole",
    "  }",
    "}",
    "",
  ].join("\n");

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
    })
  );
})();
