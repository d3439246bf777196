/* trainhub's metric charts (templates/runs/_charts.html). A .chart is a placeholder until it scrolls
   into view; then its points (at most ~2,000, downsampled by the server) are fetched from data-src
   and drawn with the vendored uPlot, loaded once on first need. */
(function () {
  "use strict";
  if (window.trainhubCharts) { window.trainhubCharts.scan(document); return; }

  var uplotReady = null;
  function loadUplot() {
    if (window.uPlot) return Promise.resolve(window.uPlot);
    if (!uplotReady) {
      uplotReady = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = "/static/uPlot.iife.min.js";
        script.onload = function () { resolve(window.uPlot); };
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return uplotReady;
  }

  function say(chart, text, cls) {
    var plot = chart.querySelector(".chart-plot");
    while (plot.firstChild) plot.removeChild(plot.firstChild);
    var span = document.createElement("span");
    span.className = cls || "hint";
    span.textContent = text;
    plot.appendChild(span);
  }

  function draw(chart, series) {
    var plot = chart.querySelector(".chart-plot");
    chart.dataset.points = String(series.points);
    chart.dataset.total = String(series.total);
    if (!series.points) { say(chart, "No numeric values."); chart.dataset.state = "empty"; return; }
    return loadUplot().then(function (uPlot) {
      while (plot.firstChild) plot.removeChild(plot.firstChild);
      var width = Math.max(240, plot.clientWidth || chart.clientWidth || 400);
      var options = {
        width: width,
        height: 200,
        scales: { x: { time: false } },
        legend: { show: true },
        series: [
          { label: series.x },
          { label: series.name, stroke: "#2456c9", width: 1.5, points: { show: series.points < 60 } }
        ],
        axes: [{ label: series.x }, {}]
      };
      chart.uplot = new uPlot(options, series.data, plot);
      chart.dataset.state = "drawn";
      if (series.sampled) {
        var note = document.createElement("span");
        note.className = "hint chart-note";
        note.textContent = series.points + " of " + series.total + " points (lowest and highest of each stretch)";
        chart.appendChild(note);
      }
    });
  }

  function load(chart) {
    if (chart.dataset.state) return;
    chart.dataset.state = "loading";
    fetch(chart.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (series) { return draw(chart, series); })
      .catch(function (err) { chart.dataset.state = "error"; say(chart, "Could not load this chart (" + err.message + ")", "error"); });
  }

  var observer = "IntersectionObserver" in window
    ? new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          if (entry.isIntersecting) { observer.unobserve(entry.target); load(entry.target); }
        });
      }, { rootMargin: "200px" })
    : null;

  function scan(root) {
    var scope = root && root.querySelectorAll ? root : document;
    scope.querySelectorAll(".chart[data-src]").forEach(function (chart) {
      if (chart.dataset.watched) return;
      chart.dataset.watched = "1";
      if (observer) observer.observe(chart);
      else load(chart);
    });
  }

  window.trainhubCharts = { scan: scan };
  if (window.htmx) window.htmx.onLoad(scan);
  else document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) window.htmx.onLoad(scan);
    scan(document);
  });
  scan(document);
})();
