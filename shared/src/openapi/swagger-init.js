// Starts Swagger UI on the service's OpenAPI document. Served by the `docs`
// function as `docs?asset=swagger-init.js`; `openapi.json` is resolved
// relative to the page, so the reference also works under an API Gateway
// stage prefix. No validator badge: it would call a third-party service.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    defaultModelsExpandDepth: 1,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
  });
});
