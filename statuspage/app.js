// The status page of openai_relay: it reads /openai_relay/status every
// second and draws the pool. Plain JS, no library: the page is served from
// Caddy's admin endpoint, embedded in the binary.
"use strict";

(function () {
	const base = location.pathname.replace(/[^/]*$/, ""); // ".../openai_relay/"
	const api = base.replace(/\/$/, "");                 // ".../openai_relay"
	const historySeconds = 15 * 60;
	const outcomeColors = {
		success: "#2f9e5b", client_error: "#8a6fd1", rate_limited: "#d04848", dead_key: "#7a2e2e",
		server_error: "#d98b1e", network_error: "#b0603a", client_closed: "#9aa3b2",
	};

	let latest = null;          // the latest status
	let samples = [];           // history samples, oldest first
	let outcomeNames = [];
	let sortKey = "id", sortAsc = true;
	let filterText = "";

	const $ = (id) => document.getElementById(id);

	function esc(v) {
		return String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
	}

	function num(n) {
		if (n === undefined || n === null) return "";
		const a = Math.abs(n);
		if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
		if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
		if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
		if (Number.isInteger(n)) return String(n);
		return n.toFixed(a < 10 ? 2 : 1);
	}

	function usd(n) { return "$" + (n || 0).toFixed(n >= 100 ? 0 : 2); }

	function time(t) {
		if (!t) return "";
		const d = new Date(t);
		return isNaN(d) ? "" : d.toLocaleTimeString();
	}

	// meter is a bar of used against limit, with the figures beside it.
	function meter(used, limit) {
		if (!limit) return '<span class="muted">' + num(used) + "</span>";
		const f = Math.min(used / limit, 1);
		const cls = f >= 1 ? "meter full" : f >= 0.8 ? "meter high" : "meter";
		return '<span class="' + cls + '"><b style="width:' + (f * 100).toFixed(1) + '%"></b></span>' + num(used) + " / " + num(limit);
	}

	function keyRow(k) {
		const lim = (k.limits && k.limits.limits) || {};
		const st = k.limits || {};
		let why = "";
		if (k.state === "retired") {
			why = esc(k.retired_reason || "");
			if (k.next_probe) why += " · next probe " + esc(time(k.next_probe));
		} else if (k.state === "cooling") {
			why = "until " + esc(time(k.cooling_until));
		}
		const action = k.state === "retired"
			? '<button type="button" data-act="restore" data-key="' + esc(k.id) + '">Restore</button>'
			: '<button type="button" data-act="retire" data-key="' + esc(k.id) + '">Retire</button>';
		return "<tr data-key=\"" + esc(k.id) + "\"><td>" + esc(k.id) + (k.limit_group ? ' <span class="muted">(' + esc(k.limit_group) + ")</span>" : "") +
			"</td><td>" + esc(k.upstream) + "</td><td>" + k.tier + "</td><td>" + k.weight +
			'</td><td><span class="state ' + esc(k.state) + '">' + esc(k.state) + "</span>" + (why ? '<span class="why">' + why + "</span>" : "") +
			"</td><td>" + meter(k.minute_requests, lim.rpm) + "</td><td>" + meter(k.minute_tokens, lim.tpm) +
			"</td><td>" + meter(st.requests_today || 0, lim.rpd) + "</td><td>" + meter(st.tokens_today || 0, lim.tpd) +
			"</td><td>" + num(st.in_flight || 0) + (lim.max_concurrent ? " / " + lim.max_concurrent : "") +
			"</td><td>" + (k.latency_ms ? num(k.latency_ms) + " ms" : "") + "</td><td>" + num(k.rate_limited) +
			"</td><td>" + action + "</td></tr>";
	}

	function sortValue(k, key) {
		switch (key) {
			case "requests_today": return (k.limits && k.limits.requests_today) || 0;
			case "tokens_today": return (k.limits && k.limits.tokens_today) || 0;
			case "in_flight": return (k.limits && k.limits.in_flight) || 0;
			default: return k[key];
		}
	}

	function renderKeys() {
		if (!latest) return;
		const f = filterText.toLowerCase();
		let keys = latest.keys;
		if (f) {
			keys = keys.filter((k) => (k.id + " " + k.upstream + " " + k.state + " " + (k.retired_reason || "") + " " + (k.limit_group || "")).toLowerCase().includes(f));
		}
		keys = keys.slice().sort((a, b) => {
			const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
			const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
			return sortAsc ? c : -c;
		});
		$("keys").tBodies[0].innerHTML = keys.map(keyRow).join("");
		$("key-count").textContent = f ? keys.length + " of " + latest.keys.length : String(latest.keys.length);
		for (const th of $("keys").tHead.rows[0].cells) {
			th.classList.toggle("sorted", th.dataset.sort === sortKey);
			th.classList.toggle("asc", th.dataset.sort === sortKey && sortAsc);
		}
	}

	function renderClients() {
		const rows = latest.clients.map((c) => {
			let budget = '<span class="muted">none</span>';
			if (c.budget) {
				const spent = c.budget.period === "daily" ? c.spent_usd_today : c.spent_usd_this_month;
				budget = meter(Number(spent.toFixed(2)), c.budget.usd) + " " + esc(c.budget.period || "monthly");
			}
			let left = "";
			if (c.limits) {
				const l = c.limits, lim = l.limits || {};
				const parts = [];
				if (lim.rpm) parts.push(num(l.remaining_requests) + " req");
				if (lim.tpm) parts.push(num(l.remaining_tokens) + " tok");
				if (lim.rpd) parts.push(num(l.remaining_requests_today) + " req today");
				if (lim.tpd) parts.push(num(l.remaining_tokens_today) + " tok today");
				left = parts.join(" · ");
			}
			return "<tr><td>" + esc(c.name) + "</td><td>" + esc(c.priority) + "</td><td>" + num(c.requests) +
				"</td><td>" + num(c.prompt_tokens + c.completion_tokens) + "</td><td>" + usd(c.spent_usd_today) +
				"</td><td>" + usd(c.spent_usd_this_month) + "</td><td>" + budget + "</td><td>" + left + "</td></tr>";
		});
		$("clients").tBodies[0].innerHTML = rows.join("");
		$("client-count").textContent = String(latest.clients.length);
	}

	function dl(pairs) {
		return "<dl>" + pairs.map(([k, v]) => "<dt>" + esc(k) + "</dt><dd>" + esc(v) + "</dd>").join("") + "</dl>";
	}

	function renderCards() {
		const q = latest.queue;
		$("queue").innerHTML = dl([["waiting", num(q.length)], ["oldest wait", q.length ? q.oldest_wait_seconds.toFixed(1) + " s" : "—"],
			["high", num(q.by_priority.high)], ["normal", num(q.by_priority.normal)], ["low", num(q.by_priority.low)]]);
		const c = latest.cache;
		$("cache").innerHTML = dl([["hit ratio", (c.hit_ratio * 100).toFixed(1) + " %"], ["entries", num(c.entries)],
			["bytes", num(c.bytes)], ["hits", num(c.hits)], ["misses", num(c.misses)], ["evictions", num(c.evictions)]]);
		$("state").innerHTML = latest.state.length === 0 ? dl([["store", "memory"]])
			: latest.state.map((s) => dl([["store", s.store + " (" + s.prefix + ")"], ["mode", s.mode], ["instances", num(s.instances_alive)]])).join("");
		$("upstreams").innerHTML = dl(latest.upstreams.map((u) => [u.name, "tier " + u.tier + " · weight " + u.weight + " · " + u.keys + " keys"]));
	}

	// chart draws series ([{name, color, values}]) over the samples' times.
	function chart(id, series) {
		const cv = $(id);
		const dpr = window.devicePixelRatio || 1;
		const w = cv.clientWidth || cv.width, h = cv.clientHeight || cv.height;
		if (cv.width !== Math.round(w * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
		const g = cv.getContext("2d");
		g.setTransform(dpr, 0, 0, dpr, 0, 0);
		g.clearRect(0, 0, w, h);
		const now = samples.length ? samples[samples.length - 1].t : Math.floor(Date.now() / 1000);
		const t0 = now - historySeconds;
		let top = 0;
		for (const s of series) for (const v of s.values) top = Math.max(top, v);
		top = top > 0 ? top * 1.1 : 1;
		const left = 34, bottom = h - 14;
		g.strokeStyle = "#e2e5ea"; g.fillStyle = "#6b7385"; g.font = "10px system-ui, sans-serif"; g.lineWidth = 1;
		for (let i = 0; i <= 2; i++) {
			const y = bottom - (bottom - 4) * i / 2;
			g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
			g.fillText(num(top * i / 2), 2, y + 3);
		}
		g.fillText("-15m", left, h - 2); g.fillText("now", w - 22, h - 2);
		const x = (t) => left + (w - left) * (t - t0) / historySeconds;
		const y = (v) => bottom - (bottom - 4) * v / top;
		for (const s of series) {
			g.strokeStyle = s.color; g.lineWidth = 1.5; g.beginPath();
			s.values.forEach((v, i) => {
				const px = x(samples[i].t), py = y(v);
				if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
			});
			g.stroke();
		}
	}

	function legend(id, series) {
		$(id).innerHTML = series.map((s) => '<span><i style="background:' + s.color + '"></i>' + esc(s.name) + "</span>").join("");
	}

	function renderCharts() {
		const outs = outcomeNames.map((name, i) => ({ name, color: outcomeColors[name] || "#555", values: samples.map((s) => s.outcomes[i]) }))
			.filter((s) => s.name === "success" || s.values.some((v) => v > 0));
		chart("chart-outcomes", outs);
		legend("legend-outcomes", outs);
		chart("chart-tokens", [{ name: "tokens", color: "#4a78d0", values: samples.map((s) => s.tokens) }]);
		const cap = [{ name: "available", color: "#9aa3b2", values: samples.map((s) => s.capacity_rps) },
			{ name: "used", color: "#4a78d0", values: samples.map((s) => s.used_rps) }];
		chart("chart-capacity", cap);
		legend("legend-capacity", cap);
		chart("chart-queue", [{ name: "queue", color: "#d98b1e", values: samples.map((s) => s.queue) }]);
		const i429 = outcomeNames.indexOf("rate_limited");
		chart("chart-429", [{ name: "429", color: "#d04848", values: samples.map((s) => i429 < 0 ? 0 : s.outcomes[i429]) }]);
	}

	function showError(msg) {
		const e = $("error");
		e.hidden = !msg;
		e.textContent = msg || "";
	}

	let loading = false;
	async function refresh() {
		if (loading) return;
		loading = true;
		try {
			const since = samples.length ? samples[samples.length - 1].t : 0;
			const resp = await fetch(api + "/status?since=" + since, { cache: "no-store" });
			if (!resp.ok) throw new Error("status: HTTP " + resp.status);
			const s = await resp.json();
			latest = s;
			outcomeNames = s.history.outcomes;
			samples = samples.concat(s.history.samples);
			const cut = samples.length ? samples[samples.length - 1].t - historySeconds : 0;
			while (samples.length && samples[0].t <= cut) samples.shift();
			renderCards();
			renderKeys();
			renderClients();
			renderCharts();
			$("updated").textContent = "updated " + new Date(s.now).toLocaleTimeString();
			showError("");
		} catch (err) {
			showError("could not read the relay's status: " + err.message);
		} finally {
			loading = false;
		}
	}

	// ask shows the confirmation dialog and resolves to whether it was confirmed.
	function ask(text) {
		const d = $("confirm");
		$("confirm-text").textContent = text;
		return new Promise((resolve) => {
			d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
			d.returnValue = "";
			d.showModal();
		});
	}

	async function act(method, path, what) {
		if (!(await ask(what))) return;
		try {
			const resp = await fetch(api + path, { method, headers: { "X-Requested-By": "openai_relay" } });
			if (!resp.ok) throw new Error(method + " " + path + ": HTTP " + resp.status + " " + (await resp.text()));
			showError("");
		} catch (err) {
			showError(err.message);
		}
		refresh();
	}

	document.addEventListener("DOMContentLoaded", () => {
		$("key-filter").addEventListener("input", (e) => { filterText = e.target.value; renderKeys(); });
		$("keys").tHead.addEventListener("click", (e) => {
			const th = e.target.closest("th[data-sort]");
			if (!th) return;
			if (sortKey === th.dataset.sort) sortAsc = !sortAsc; else { sortKey = th.dataset.sort; sortAsc = true; }
			renderKeys();
		});
		$("keys").tBodies[0].addEventListener("click", (e) => {
			const b = e.target.closest("button[data-act]");
			if (!b) return;
			const id = b.dataset.key, verb = b.dataset.act;
			act("POST", "/keys/" + encodeURIComponent(id) + "/" + verb, (verb === "retire" ? "Retire" : "Restore") + " the key " + id + "?");
		});
		$("purge").addEventListener("click", () => act("DELETE", "/cache", "Empty the cache? Every stored answer is dropped."));
		refresh();
		setInterval(refresh, 1000);
	});
})();
