// The slide with its class map over it: OpenSeadragon with two Deep Zoom images of one size,
// and more, the map's uncertainty and the artefacts found on the slide, each added the first
// time its checkbox is ticked.
"use strict";
(async function () {
  const info = await (await fetch("info.json")).json();
  document.getElementById("title").textContent = info.name;
  document.title = "wsiseg view: " + info.name;
  const legend = document.getElementById("legend");
  for (const c of info.classes) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "sw";
    sw.style.background = "rgb(" + c.color.join(",") + ")";
    li.append(sw, c.name + ": " + c.area_mm2.toFixed(3) + " mm\u00b2");
    legend.append(li);
  }
  const overlay = document.getElementById("overlay");
  const opacity = document.getElementById("opacity");
  const viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/static/images/",
    tileSources: ["slide.dzi", {tileSource: "map.dzi", opacity: opacity.value / 100}],
    showNavigator: true,
    crossOriginPolicy: false,
  });
  window.wsisegViewer = viewer;
  function mapItem() { return viewer.world.getItemCount() > 1 ? viewer.world.getItemAt(1) : null; }
  function apply() {
    const item = mapItem();
    if (item) item.setOpacity(overlay.checked ? opacity.value / 100 : 0);
  }
  overlay.addEventListener("change", apply);
  opacity.addEventListener("input", apply);
  viewer.world.addHandler("add-item", apply);

  // The uncertainty layer, where the result has one: off at first, so its tiles are fetched
  // only once it is asked for; hidden again by opacity 0 (OpenSeadragon then draws none).
  // A layer shown on request: its Deep Zoom image added the first time its checkbox is ticked.
  function optionalLayer(dzi, checkbox, opacity) {
    const layer = {item: null, adding: false};
    function apply() {
      const value = checkbox.checked ? (opacity ? opacity.value / 100 : 1) : 0;
      if (layer.item) {
        layer.item.setOpacity(value);
      } else if (checkbox.checked && !layer.adding) {
        layer.adding = true;
        viewer.addTiledImage({
          tileSource: dzi,
          opacity: value,
          success: function (event) {
            layer.item = event.item;
            apply();
          },
          error: function () { layer.adding = false; },
        });
      }
    }
    checkbox.addEventListener("change", apply);
    if (opacity) opacity.addEventListener("input", apply);
    return layer;
  }
  // Each shown once the slide and map are in place, so its layer goes on top of both.
  function showOnOpen(id) {
    viewer.addOnceHandler("open", function () { document.getElementById(id).hidden = false; });
  }
  let uncertaintyLayer = null;
  if (info.uncertainty) {
    uncertaintyLayer = optionalLayer("uncertainty.dzi", document.getElementById("uncertainty"),
                                     document.getElementById("uncertainty-opacity"));
    showOnOpen("confidence-controls");
  }
  window.wsisegUncertainty = function () { return uncertaintyLayer && uncertaintyLayer.item; };

  // The artefacts found on the slide (pen, out of focus, folds, ...), where the result has
  // them: their colours, hatched, with a legend of those present.
  let qcLayer = null;
  if (info.qc) {
    qcLayer = optionalLayer("qc.dzi", document.getElementById("qc"),
                            document.getElementById("qc-opacity"));
    const qcLegend = document.getElementById("qc-legend");
    for (const a of info.artefacts) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "sw hatch";
      sw.style.color = "rgb(" + a.color.join(",") + ")";
      li.append(sw, a.name + ": " + a.area_mm2.toFixed(3) + " mm\u00b2");
      qcLegend.append(li);
    }
    if (!info.artefacts.length) {
      const li = document.createElement("li");
      li.textContent = "no artefact found";
      qcLegend.append(li);
    }
    showOnOpen("qc-controls");
  }
  window.wsisegQc = function () { return qcLayer && qcLayer.item; };

  const status = document.getElementById("status");
  let pending = null;
  new OpenSeadragon.MouseTracker({
    element: viewer.container,
    moveHandler: function (event) {
      const item = viewer.world.getItemAt(0);
      if (!item) return;
      const p = item.viewerElementToImageCoordinates(event.position);
      const x0 = Math.floor(p.x), y0 = Math.floor(p.y);
      if (x0 < 0 || y0 < 0 || x0 >= info.width || y0 >= info.height) {
        status.textContent = "\u00a0";
        return;
      }
      const um = (x0 * info.mpp[0]).toFixed(1) + ", " + (y0 * info.mpp[1]).toFixed(1) + " um";
      const where = "x, y " + um + "\nlevel 0 px " + x0 + ", " + y0;
      clearTimeout(pending);
      pending = setTimeout(async function () {
        const r = await (await fetch("class?x=" + x0 + "&y=" + y0)).json();
        let what = r.name === null ? "outside the map" : r.name;
        if (r.confidence !== null && r.confidence !== undefined) {
          what += ", confidence " + r.confidence.toFixed(2);
        }
        if (r.artefact) what += ", on " + r.artefact;
        status.textContent = what + "\n" + where;
      }, 50);
    },
  });
})();
