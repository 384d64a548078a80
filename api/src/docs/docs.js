// Renders the OpenAPI document as a plain list of operations; no framework, no network beyond it.
(function () {
  "use strict";
  const root = document.getElementById("ops");
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    children.flat().forEach((c) => e.append(c instanceof Node ? c : document.createTextNode(String(c))));
    return e;
  };
  const resolve = (spec, schema) => {
    if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
    return schema;
  };
  const schemaText = (spec, schema) => JSON.stringify(resolve(spec, schema) || {}, null, 2);
  fetch("/api/openapi.json")
    .then((r) => r.json())
    .then((spec) => {
      root.textContent = "";
      const byTag = {};
      Object.entries(spec.paths).forEach(([path, item]) =>
        Object.entries(item).forEach(([method, op]) => {
          const tag = (op.tags && op.tags[0]) || "other";
          (byTag[tag] = byTag[tag] || []).push({ path, method, op });
        })
      );
      Object.entries(byTag).forEach(([tag, ops]) => {
        root.append(el("h2", {}, tag));
        ops.forEach(({ path, method, op }) => {
          const box = el("section", { class: "op" },
            el("div", {}, el("span", { class: "method " + method }, method), " ", el("code", {}, path)));
          if (op.summary || op.description) box.append(el("p", {}, op.summary || op.description));
          const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
          if (body) box.append(el("div", {}, "Request body:"), el("pre", {}, schemaText(spec, body.schema)));
          const rows = Object.entries(op.responses || {}).map(([code, r]) =>
            el("tr", {}, el("td", {}, code), el("td", {}, r.description || "")));
          box.append(el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning")), rows));
          root.append(box);
        });
      });
    })
    .catch((e) => { root.textContent = "Could not load the API description: " + e; });
})();
