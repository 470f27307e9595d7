// Swagger UI on GCL's OpenAPI document. Authorize (bearer) sends the key with "Try it out"; the key the
// Concurrency page keeps for this tab is offered too, and neither is stored beyond the tab.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  const key = sessionStorage.getItem("gcl.apiKey");
  const ui = window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
    onComplete: () => {
      if (key) window.ui.preauthorizeApiKey("bearer", key);
    },
    requestInterceptor: (req) => {
      // The document itself may need the key too when the server has keys.
      if (key && !req.headers.Authorization && req.url.endsWith("/openapi.json")) {
        req.headers.Authorization = "Bearer " + key;
      }
      return req;
    },
  });
  window.ui = ui;
});
