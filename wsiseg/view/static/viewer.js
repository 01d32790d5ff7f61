// The slide with its class map over it: OpenSeadragon with two Deep Zoom images of one size.
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
        status.textContent = (r.name === null ? "outside the map" : r.name) + "\n" + where;
      }, 50);
    },
  });
})();
