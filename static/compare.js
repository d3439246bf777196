// Experiments: choosing runs to compare, sorting the comparison table, the overlaid metric charts.
// A file of its own: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  // The experiment page: at most data-max runs chosen; the compare URL is ?runs=a,b,c.
  function setUpChooser(form) {
    var max = parseInt(form.dataset.max || "50", 10);
    var count = document.getElementById("compare-count");
    var boxes = function () { return Array.prototype.slice.call(form.querySelectorAll('input[name="runs"]')); };
    function update() {
      var chosen = boxes().filter(function (b) { return b.checked; });
      boxes().forEach(function (b) { b.disabled = !b.checked && chosen.length >= max; });
      if (count) {
        count.textContent = chosen.length
          ? chosen.length + " of at most " + max + " runs chosen" + (chosen.length >= max ? " (the most)" : "")
          : "Choose up to " + max + " runs to compare.";
      }
    }
    form.addEventListener("change", update);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var ids = boxes().filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
      if (!ids.length) {
        if (count) count.textContent = "Choose at least one run first.";
        return;
      }
      window.location.assign(form.action + "?runs=" + ids.map(encodeURIComponent).join(","));
    });
    update();
  }

  // The comparison table: a click on a column's button sorts the runs by it (numbers as numbers,
  // cells without a value last); a second click reverses.
  function setUpSorting(table) {
    var headers = Array.prototype.slice.call(table.querySelectorAll("thead tr:last-child th"));
    headers.forEach(function (th, index) {
      var button = th.querySelector("button.sort");
      if (!button) return;
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var keyOf = function (row) { return row.cells[index].getAttribute("data-sort") || ""; };
        var numeric = rows.every(function (row) { var k = keyOf(row); return k === "" || isFinite(Number(k)); });
        rows.sort(function (a, b) {
          var x = keyOf(a), y = keyOf(b);
          if (x === "" || y === "") return x === y ? 0 : (x === "" ? 1 : -1);
          var order = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
    var only = document.getElementById("only-differing");
    if (only) {
      only.addEventListener("change", function () {
        table.classList.toggle("only-diff", only.checked);
        var groups = table.querySelectorAll("thead tr.groups th[scope=colgroup]");
        ["param", "metric"].forEach(function (kind) {
          var shown = table.querySelectorAll("thead tr:last-child th." + kind + (only.checked ? ".diff" : "")).length;
          Array.prototype.forEach.call(groups, function (g) {
            if (g.textContent.trim() === (kind === "param" ? "Parameters" : "Final metrics")) {
              g.colSpan = Math.max(shown, 1);
              g.hidden = shown === 0;
            }
          });
        });
      });
    }
  }

  // One chart per metric, every run's curve overlaid; each chart's data is fetched when it
  // scrolls into view.
  var COLORS = ["#2456c9", "#d1495b", "#2a9d8f", "#e9a03b", "#7b4fb3", "#1d7a46", "#b5651d",
    "#3b8ea5", "#c2185b", "#5d6778"];
  function color(i) {
    return i < COLORS.length ? COLORS[i] : "hsl(" + ((i * 47) % 360) + ", 60%, 45%)";
  }

  function draw(figure, runs) {
    var box = figure.querySelector(".chart");
    box.textContent = "";
    var withPoints = runs.filter(function (r) { return r.x.length; });
    if (!withPoints.length || typeof uPlot === "undefined") {
      box.textContent = withPoints.length ? "The chart library did not load." : "No points.";
      return;
    }
    var data = uPlot.join(withPoints.map(function (r) { return [r.x, r.y]; }));
    var series = [{ label: "step" }].concat(withPoints.map(function (r, i) {
      // A curve of a few points (a value logged once) is drawn as points, else as a line.
      return { label: r.label, stroke: color(i), fill: undefined, width: 1.5, spanGaps: true,
        points: { show: r.x.length <= 20, size: 7, fill: color(i) } };
    }));
    var plot = new uPlot({
      width: Math.max(box.clientWidth, 300),
      height: 260,
      scales: { x: { time: false } },
      series: series,
      axes: [{ label: "step" }, {}],
      legend: { live: true },
    }, data, box);
    figure.dataset.loaded = "true";
    figure.dataset.runs = String(withPoints.length);
    figure.dataset.points = String(withPoints.reduce(function (n, r) { return n + r.x.length; }, 0));
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(box.clientWidth, 300), height: 260 });
    });
  }

  function load(section, figure) {
    var metric = figure.dataset.metric;
    fetch(section.dataset.src + "&metric=" + encodeURIComponent(metric), {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.json();
      })
      .then(function (body) { draw(figure, body.metrics[metric] || []); })
      .catch(function (error) {
        figure.querySelector(".chart").textContent = "Could not load the chart: " + error.message;
      });
  }

  function setUpCharts(section) {
    var figures = Array.prototype.slice.call(section.querySelectorAll("figure.compare-chart"));
    if (!("IntersectionObserver" in window)) {
      figures.forEach(function (f) { load(section, f); });
      return;
    }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) {
          observer.unobserve(entry.target);
          load(section, entry.target);
        }
      });
    }, { rootMargin: "200px" });
    figures.forEach(function (f) { observer.observe(f); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("compare-form");
    if (form) setUpChooser(form);
    var table = document.getElementById("compare-table");
    if (table) setUpSorting(table);
    var charts = document.getElementById("compare-chart");
    if (charts) setUpCharts(charts);
  });
})();
