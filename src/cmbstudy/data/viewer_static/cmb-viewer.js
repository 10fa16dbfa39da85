/*
 * cmbstudy's scan viewer: the controls around NiiVue.
 *
 * NiiVue (niivue.umd.js, bundled beside this file) reads the NIfTI volumes and draws the slices. Written by
 * hand here, because NiiVue has no such parts: the scan and image pickers, the plane buttons, the outline
 * toggle, the table of marks linked to the crosshair, and the read-out of the mark under the pointer.
 *
 * A viewer is a <div class="cmb-viewer"> that holds a <script type="application/json" class="cmb-viewer-data">:
 *   {scans: [{key, title, src?, images?: [{name, data}], outline?: data, outline_kinds?: [...], origin?: [i, j, k],
 *             marks?: [...], colors?: {...}}]}
 * where each `data` is a base64 gzipped NIfTI (the outline's voxels: 1 + the index of a kind in outline_kinds).
 * The volumes may be a box of the scan whose first voxel is `origin`; marks and the voxel named are on the
 * scan's own grid. A scan without `images` is read from its `src`, a script that
 * calls cmbViewer.register(key, scan) (this works from file:// pages, where fetch does not).
 * Each viewer's element gets data-state="ready" once a scan is drawn and the browser has shown that frame (and
 * data-ready-ms, the milliseconds from the page's start to its first scan shown), or data-state="error" and data-error, the reason; data-busy is
 * set while a scan loads, data-scan names the scan shown and data-image its image (magnitude or phase).
 */
(function () {
  "use strict";
  if (window.cmbViewer) {
    window.cmbViewer.start();
    return;
  }
  var registered = {};
  var waiting = {};
  var reading = {};  // key: the promise of its data script
  var NEAR_VOXELS = 3;  // the read-out names a mark whose centre lies this close to the pointer

  function register(key, scan) {
    registered[key] = scan;
    (waiting[key] || []).forEach(function (done) { done(scan); });
    delete waiting[key];
  }

  function bytesOf(base64) {
    var text = atob(base64);
    var out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out.buffer;
  }

  function scanData(scan) {
    // the scan's data, its script read once however often it is asked for
    if (scan.images) return Promise.resolve(scan);
    if (registered[scan.key]) return Promise.resolve(registered[scan.key]);
    if (!reading[scan.key]) {
      reading[scan.key] = new Promise(function (resolve, reject) {
        (waiting[scan.key] = waiting[scan.key] || []).push(resolve);
        var script = document.createElement("script");
        script.src = scan.src;
        script.onerror = function () { delete reading[scan.key]; reject(new Error("cannot read " + scan.src)); };
        document.head.appendChild(script);
      });
    }
    return reading[scan.key];
  }

  function kindColormap(kinds, colors) {
    // NiiVue's drawing colours: code k (1-based) is kinds[k - 1]'s colour; 0 is transparent
    var lut = {R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""]};
    kinds.forEach(function (kind, i) {
      var rgb = colors[kind] || [255, 255, 255];
      lut.R.push(rgb[0]); lut.G.push(rgb[1]); lut.B.push(rgb[2]); lut.A.push(255);
      lut.I.push(i + 1); lut.labels.push(kind);
    });
    return lut;
  }

  function shown() {
    // resolves once the browser has composited the next frame: WebGL's work is done by then
    return new Promise(function (resolve) {
      requestAnimationFrame(function () { setTimeout(resolve, 0); });
    });
  }

  function describe(mark) {
    var parts = [mark.name];
    if (mark.probability !== null && mark.probability !== undefined) parts.push("probability " + mark.probability.toFixed(2));
    if (mark.diameter_mm !== null && mark.diameter_mm !== undefined) parts.push(mark.diameter_mm.toFixed(1) + " mm");
    if (mark.note) parts.push(mark.note);
    return parts.join(" · ");
  }

  function nearestMark(marks, voxel) {
    var best = null, bestDistance = NEAR_VOXELS;
    marks.forEach(function (mark) {
      var d = Math.hypot(mark.voxel[0] - voxel[0], mark.voxel[1] - voxel[1], mark.voxel[2] - voxel[2]);
      if (d <= bestDistance) { best = mark; bestDistance = d; }
    });
    return best;
  }

  function Viewer(element) {
    this.element = element;
    this.scans = JSON.parse(element.querySelector("script.cmb-viewer-data").textContent).scans;
    this.canvas = element.querySelector("canvas");
    this.status = element.querySelector(".cmb-status");
    this.current = null;
    this.queue = Promise.resolve();  // scans load one after another, the last one picked wins
    this.wanted = 0;
    this.nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.1, 0.9, 0.6, 0.9], crosshairWidth: 1, crosshairGap: 12,
      isColorbar: false,
      show3Dcrosshair: false, loadingText: "loading the scan…", dragAndDropEnabled: false,
    });
    this.nv.onLocationChange = this.located.bind(this);
  }

  Viewer.prototype.control = function (name) {
    return this.element.querySelector("[data-control=" + name + "]");
  };

  Viewer.prototype.start = async function () {
    var self = this;
    scanData(this.scans[0]).catch(function () {});  // read while NiiVue starts; show() reports a failure
    await this.nv.attachToCanvas(this.canvas);
    var scanChoice = this.control("scan");
    if (scanChoice) scanChoice.addEventListener("change", function () { self.pick(Number(scanChoice.value)); });
    var imageChoice = this.control("image");
    if (imageChoice) imageChoice.addEventListener("change", function () {
      self.pick(self.index, Number(imageChoice.value));
    });
    this.control("outline").addEventListener("change", function () { self.showOutline(this.checked); });
    this.element.querySelectorAll("[data-plane]").forEach(function (button) {
      button.addEventListener("click", function () { self.setPlane(button.dataset.plane); });
    });
    this.element.querySelectorAll("tr[data-mark]").forEach(function (row) {
      row.addEventListener("click", function () { self.goTo(Number(row.dataset.mark)); });
      row.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); self.goTo(Number(row.dataset.mark)); }
      });
    });
    this.canvas.addEventListener("mousemove", function (event) { self.hover(event); });
    await this.pick(0);
  };

  Viewer.prototype.pick = function (index, imageIndex) {
    // Loads run one at a time (two interleaved loads would mix their volumes); a pick made while
    // another scan loads waits for it, and a pick overtaken by a later one is skipped.
    var self = this, wanted = index + ":" + (imageIndex || 0);
    this.wanted = wanted;
    this.element.dataset.busy = "true";
    this.queue = this.queue.then(function () {
      return self.wanted === wanted ? self.show(index, imageIndex || 0) : null;
    }).catch(function (error) {
      self.element.dataset.state = "error";
      self.element.dataset.error = String(error);
      self.status.textContent = "The viewer could not open the scan: " + error;
    }).then(function () {
      if (self.wanted === wanted) delete self.element.dataset.busy;
    });
    return this.queue;
  };

  Viewer.prototype.show = async function (index, imageIndex) {
    // One image at a time (magnitude or phase) as NiiVue's volume, and the outlines as its drawing layer:
    // an overlay volume costs a browser that draws WebGL in software (headless Chromium) as much again
    // as the image, a drawing a texture upload. Both are decoded before either is shown, so the canvas
    // is drawn once.
    var nv = this.nv;
    var scan = await scanData(this.scans[index]);
    var sameScan = this.current === scan;
    var crosshair = sameScan ? nv.scene.crosshairPos.slice() : null;
    var parts = [{data: scan.images[imageIndex].data, name: scan.key + "-" + imageIndex + ".nii.gz"}];
    var outlined = Boolean(scan.outline && scan.marks.length);
    if (outlined) parts.push({data: scan.outline, name: scan.key + "-outline.nii.gz"});
    var volumes = await Promise.all(parts.map(function (part) {
      return niivue.NVImage.loadFromUrl({url: bytesOf(part.data), name: part.name});
    }));
    this.status.textContent = "";
    this.canvas.title = "";
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    if (nv.drawBitmap) nv.closeDrawing();
    if (outlined) nv.setDrawColormap(kindColormap(scan.outline_kinds, scan.colors));
    nv.addVolume(volumes[0]);
    this.outlined = outlined && nv.loadDrawing(volumes[1]);
    if (outlined && !this.outlined) throw new Error("the outlines do not match the scan's grid");
    this.current = scan;
    this.index = index;
    this.element.querySelectorAll("[data-scan-part]").forEach(function (part) {
      part.hidden = part.dataset.scanPart !== scan.key;
    });
    var imageChoice = this.control("image");
    if (imageChoice && !sameScan) {
      imageChoice.innerHTML = "";
      scan.images.forEach(function (image, i) { imageChoice.add(new Option(image.name, String(i))); });
      imageChoice.disabled = scan.images.length < 2;
    }
    if (imageChoice) imageChoice.value = String(imageIndex);
    this.showOutline(this.control("outline").checked);
    if (!this.planeSet) this.setPlane("axial");
    if (crosshair) {
      nv.scene.crosshairPos = crosshair;
      nv.drawScene();
      nv.createOnLocationChange();
    } else if (scan.marks.length) this.goTo(scan.focus || scan.marks[0].id);
    else nv.drawScene();
    this.element.dataset.scan = scan.key;
    this.element.dataset.image = scan.images[imageIndex].name;
    await shown();
    if (!this.element.dataset.readyMs) this.element.dataset.readyMs = String(Math.round(performance.now()));
    this.element.dataset.state = "ready";
  };

  Viewer.prototype.showOutline = function (shown) {
    if (this.outlined) this.nv.setDrawOpacity(shown ? 1 : 0);
    this.nv.drawScene();
  };

  Viewer.prototype.setPlane = function (plane) {
    var nv = this.nv;
    var types = {axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal,
                 all: nv.sliceTypeMultiplanar};
    nv.setSliceType(types[plane]);
    this.planeSet = plane;
    this.element.querySelectorAll("[data-plane]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.plane === plane));
    });
  };

  Viewer.prototype.toShown = function (voxel) {  // the scan's voxel -> the shown volume's
    var origin = this.current.origin || [0, 0, 0];
    return voxel.map(function (v, i) { return v - origin[i]; });
  };

  Viewer.prototype.fromShown = function (voxel) {  // the shown volume's voxel -> the scan's
    var origin = this.current.origin || [0, 0, 0];
    return Array.from(voxel, function (v, i) { return v + origin[i]; });
  };

  Viewer.prototype.goTo = function (id) {
    var mark = this.current.marks.find(function (m) { return m.id === id; });
    if (!mark) return;
    this.nv.scene.crosshairPos = this.nv.vox2frac(this.toShown(mark.voxel));
    this.nv.drawScene();
    this.nv.createOnLocationChange();
  };

  Viewer.prototype.select = function (mark) {
    this.element.querySelectorAll("tr[data-mark]").forEach(function (row) {
      row.classList.toggle("cmb-selected", mark !== null && row.dataset.scanPart === mark.scan
                                            && Number(row.dataset.mark) === mark.id);
    });
  };

  Viewer.prototype.located = function (data) {
    if (!this.current) return;
    var voxel = this.fromShown(this.nv.frac2vox(this.nv.scene.crosshairPos));
    var mark = nearestMark(this.current.marks, voxel);
    if (mark) mark.scan = this.current.key;
    this.select(mark);
    var where = "voxel " + voxel.join(", ");
    this.status.textContent = mark ? describe(mark) + " — " + where : where;
  };

  Viewer.prototype.hover = function (event) {
    if (!this.current || !this.current.marks.length) {
      this.canvas.title = "";
      return;
    }
    var box = this.canvas.getBoundingClientRect();
    var dpr = this.nv.uiData.dpr || 1;
    var frac = this.nv.canvasPos2frac([(event.clientX - box.left) * dpr, (event.clientY - box.top) * dpr]);
    if (!frac || frac[0] < 0) return;
    var mark = nearestMark(this.current.marks, this.fromShown(this.nv.frac2vox(frac)));
    this.canvas.title = mark ? describe(mark) : "";
  };

  function start() {
    document.querySelectorAll(".cmb-viewer:not([data-state])").forEach(function (element) {
      element.dataset.state = "loading";
      var viewer;
      try {
        viewer = new Viewer(element);
      } catch (error) {
        element.dataset.state = "error";
        element.dataset.error = String(error);
        return;
      }
      window.cmbViewer.viewers.push(viewer);
      viewer.ready = viewer.start().then(function () {
        if (viewer.element.dataset.state === "error") throw new Error(viewer.element.dataset.error);
      }).catch(function (error) {
        element.dataset.state = "error";
        element.dataset.error = String(error);
        element.querySelector(".cmb-status").textContent = "The viewer could not open the scan: " + error;
      });
    });
  }

  window.cmbViewer = {register: register, start: start, viewers: []};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
