// Starts Swagger UI on the OpenAPI document. A file of its own, not an inline
// script, so that the page's Content-Security-Policy can forbid those.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.specUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    // The default sends the document to an outside validator.
    validatorUrl: null,
  });
});
