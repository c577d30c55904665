// The mde dashboard: pickers from /api/series, a candle chart with volume, the latest candles,
// the paper sessions that are running. Everything comes from this server; no network beyond it.
"use strict";
(function () {
  const LWC = window.LightweightCharts;
  const IST_SECONDS = 5.5 * 3600;    // the chart's axis is UTC: shift so that it reads IST
  const CHART_LIMIT = 300;           // candles drawn
  const TABLE_LIMIT = 20;            // candles in the table
  const LIVE_MS = 5000;              // refresh while the market is open
  const IDLE_MS = 60000;             // otherwise only look at the clock now and then
  const TIMEFRAMES = ["1m", "3m", "5m", "10m", "15m", "30m", "60m", "1d"];
  const MINUTES = { "1m": 1, "3m": 3, "5m": 5, "10m": 10, "15m": 15, "30m": 30, "60m": 60, "1d": 1440 };
  const $ = (id) => document.getElementById(id);
  // the page's times are IST, whatever the browser's zone (the clock beside it is the server's IST)
  const IST_TIME = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });

  // The token rule: /api/* may need `Authorization: Bearer`. The page takes it from its URL
  // fragment (#token=..., never sent to a server) or from the prompt, and keeps it for the tab.
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("mde-token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  let token = sessionStorage.getItem("mde-token");

  class Unauthorized extends Error {}

  async function api(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const res = await fetch(path, { headers, cache: "no-store" });
    if (res.status === 401) throw new Unauthorized("this server needs its API token");
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  }

  function showError(err) {
    const box = $("error");
    if (err instanceof Unauthorized) {
      $("token-form").hidden = false;
    }
    box.textContent = err ? String(err.message || err) : "";
    box.hidden = !err;
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token-input").value.trim();
    sessionStorage.setItem("mde-token", token);
    $("token-form").hidden = true;
    start();
  });

  // -- the chart ----------------------------------------------------------------------------
  const chart = LWC.createChart($("chart"), {
    autoSize: true,
    layout: { background: { color: "#111418" }, textColor: "#d8dde3" },
    grid: { vertLines: { color: "#1e242b" }, horzLines: { color: "#1e242b" } },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2a3038" },
    rightPriceScale: { borderColor: "#2a3038" },
  });
  const candles = chart.addSeries(LWC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
  });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
  const volume = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: "volume" }, priceScaleId: "volume", lastValueVisible: false, priceLineVisible: false,
  });
  volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

  const chartTime = (ts) => Date.parse(ts) / 1000 + IST_SECONDS;
  const hhmm = (ts) => ts.slice(0, 16).replace("T", " ");
  const num = (x) => (x === null || x === undefined ? "-" : Number(x).toFixed(2));

  // -- state ----------------------------------------------------------------------------------
  let series = [];       // /api/series
  let current = null;    // {symbol, timeframe}
  let shownKey = null;   // what the chart shows now, to fit the view only on a change
  let timer = null;

  function fillPickers() {
    const symbols = [...new Set(series.map((s) => s.instrument))].sort();
    const sel = $("symbol");
    const keep = sel.value;
    sel.innerHTML = "";
    for (const s of symbols) sel.add(new Option(s.replace(/^NSE:/, ""), s));
    const params = new URLSearchParams(location.search);
    const wanted = params.get("symbol");
    const pick = [wanted, keep].find((v) => v && symbols.includes(v)) ||
      symbols.find((s) => s === "NSE:NIFTY 50") || symbols[0];
    if (pick) sel.value = pick;
    fillTimeframes(params.get("timeframe"));
  }

  function fillTimeframes(wanted) {
    const sel = $("timeframe");
    const keep = wanted || sel.value || "5m";
    const cached = series.filter((s) => s.instrument === $("symbol").value).map((s) => s.timeframe);
    const smallest = Math.min(...cached.map((t) => MINUTES[t] || 1e9));
    sel.innerHTML = "";
    for (const tf of TIMEFRAMES) {
      if (MINUTES[tf] >= smallest) sel.add(new Option(cached.includes(tf) ? tf : tf + " (built)", tf));
    }
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : (cached[0] || "5m");
  }

  async function loadWindow() {
    const symbol = $("symbol").value, timeframe = $("timeframe").value;
    if (!symbol) return;
    const q = "symbol=" + encodeURIComponent(symbol) + "&timeframe=" + encodeURIComponent(timeframe);
    const body = await api("/api/market_data/window?" + q + "&limit=" + CHART_LIMIT);
    const rows = body.candles;
    candles.setData(rows.map((c) => ({ time: chartTime(c.ts), open: c.open, high: c.high, low: c.low, close: c.close })));
    volume.setData(rows.map((c) => ({
      time: chartTime(c.ts), value: c.volume || 0,
      color: c.close >= c.open ? "rgba(38,166,154,0.5)" : "rgba(239,83,80,0.5)",
    })));
    const key = body.symbol + "/" + body.timeframe;
    if (key !== shownKey) { chart.timeScale().fitContent(); shownKey = key; }
    const last = rows[rows.length - 1];
    $("legend").textContent = last
      ? `${body.symbol} ${body.timeframe}  ${hhmm(last.ts)}  O ${num(last.open)} H ${num(last.high)} L ${num(last.low)} C ${num(last.close)}`
      : `${body.symbol} ${body.timeframe}: no complete candles yet`;
    fillTable(body, rows.slice(-TABLE_LIMIT).reverse());
    // The chart paints on the next animation frame: mark the page ready after it.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      document.body.dataset.ready = key;
      document.body.dataset.count = String(rows.length);
    }));
  }

  function fillTable(body, rows) {
    $("table-caption").textContent = `${body.symbol} ${body.timeframe}, newest first`;
    const tbody = $("candles").tBodies[0];
    tbody.innerHTML = "";
    for (const c of rows) {
      const tr = tbody.insertRow();
      tr.dataset.ts = c.ts;
      const cls = c.close >= c.open ? "up" : "down";
      const cells = [hhmm(c.ts), num(c.open), num(c.high), num(c.low), num(c.close), c.volume === null ? "-" : String(c.volume)];
      cells.forEach((text, i) => {
        const td = tr.insertCell();
        td.textContent = text;
        if (i === 4) td.className = cls;
      });
    }
  }

  async function loadPaper() {
    const sessions = (await api("/api/paper/sessions")).filter((s) => s.status === "running");
    const box = $("paper");
    box.hidden = sessions.length === 0;
    const body = $("paper-body");
    body.innerHTML = "";
    for (const s of sessions) {
      const div = document.createElement("div");
      // P&L labelled as the API gives it: net = gross - charges (null: not known, shown as "-")
      const h = document.createElement("div");
      h.append(`${s.session} (${s.strategy}, ${s.timeframe}) net P&L `);
      const p = document.createElement("b");
      p.className = s.net_pnl === null || s.net_pnl === undefined ? "" : (s.net_pnl >= 0 ? "pos" : "neg");
      p.textContent = num(s.net_pnl);
      h.append(p);
      h.append(` (gross ${num(s.gross_pnl)}, charges ${num(s.charges)})`);
      div.append(h);
      const pos = Object.entries(s.positions || {});
      const plist = document.createElement("div");
      plist.textContent = pos.length ? "positions: " + pos.map(([sym, q]) => `${sym} ${q}`).join(", ") : "flat";
      div.append(plist);
      const ul = document.createElement("ul");
      for (const f of (s.recent_fills || []).slice().reverse()) {
        const li = document.createElement("li");
        li.textContent = `${hhmm(f.ts)} ${f.side > 0 ? "BUY" : "SELL"} ${f.qty} ${f.symbol} @ ${num(f.price)} (${f.reason})`;
        ul.append(li);
      }
      div.append(ul);
      body.append(div);
    }
  }

  async function tick() {
    clearTimeout(timer);
    let open = false;
    try {
      const clock = await api("/api/clock");
      open = clock.market_open;
      $("clock").textContent = `${hhmm(clock.now)} IST${clock.pinned ? " (pinned)" : ""}, market ${open ? "open" : "closed"}`;
      await Promise.all([loadWindow(), loadPaper()]);
      $("refreshed").textContent = "updated " + IST_TIME.format(new Date()) + " IST";
      showError(null);
    } catch (err) {
      showError(err);
      if (err instanceof Unauthorized) return;
    }
    timer = setTimeout(tick, open ? LIVE_MS : IDLE_MS);
  }

  async function start() {
    try {
      series = await api("/api/series");
      if (!series.length) throw new Error("the cache is empty: run `mde refresh` first");
      fillPickers();
      await tick();
    } catch (err) {
      showError(err);
    }
  }

  $("symbol").addEventListener("change", () => { fillTimeframes(); tick(); });
  $("timeframe").addEventListener("change", () => tick());
  start();
})();
