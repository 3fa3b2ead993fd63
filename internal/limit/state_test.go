package limit

import (
	"testing"
	"time"
)

// busy returns a limiter with something in every part of its state.
func busy(lim Limits) *Limiter {
	l := NewLimiter(lim)
	r, _, _ := l.Reserve(t0, 500)
	r.Retime(t0.Add(time.Millisecond))
	r.Settle(t0.Add(2*time.Millisecond), 700)
	_, _, _ = l.Reserve(t0.Add(3*time.Millisecond), 100)
	l.Learn(t0.Add(4*time.Millisecond), headers(map[string]string{"x-ratelimit-limit-tokens": "90000"}))
	l.CoolDown(t0.Add(time.Second))
	return l
}

func TestStateRoundTrip(t *testing.T) {
	lim := Limits{RPM: 600, RPD: 1000, TPD: 1e6, MaxConcurrent: 4}
	src := busy(lim)
	mirror := NewLimiter(lim)
	mirror.SetState(src.State())
	if got, want := mirror.State(), src.State(); got != want {
		t.Fatalf("mirror state %+v, want %+v", got, want)
	}
	if got, want := mirror.Limits(), src.Limits(); got != want {
		t.Fatalf("mirror limits %+v, want %+v (the learned TPM comes with the state)", got, want)
	}
	for _, d := range []time.Duration{0, 500 * time.Millisecond, 2 * time.Second, time.Minute} {
		now := t0.Add(d)
		if got, want := mirror.Status(now), src.Status(now); got != want {
			t.Errorf("+%v: Status %+v, want %+v", d, got, want)
		}
		if got, want := mirror.Headroom(now), src.Headroom(now); got != want {
			t.Errorf("+%v: Headroom %v, want %v", d, got, want)
		}
		for _, n := range []int64{0, 1000, 5000} {
			ga, gok := mirror.Check(now, n)
			wa, wok := src.Check(now, n)
			if gok != wok || !ga.Equal(wa) {
				t.Errorf("+%v: Check(%d) = %v, %v, want %v, %v", d, n, ga, gok, wa, wok)
			}
		}
	}
}

func TestSetState(t *testing.T) {
	at := t0.UnixNano()
	tests := []struct {
		name    string
		conf    Limits
		s       State
		wantLim Limits
		wantReq BucketState
	}{
		{
			name:    "same rate: taken as is",
			conf:    Limits{RPM: 60},
			s:       State{At: at, Req: BucketState{Limit: 60, TAT: at + 3e9, Sent: at + 2e9, Pending: 1e9}},
			wantLim: Limits{RPM: 60, Burst: DefaultBurst},
			wantReq: BucketState{Limit: 60, TAT: at + 3e9, Sent: at + 2e9, Pending: 1e9},
		},
		{
			name:    "other rate: the backlog is converted at At, the upstream model restarts",
			conf:    Limits{RPM: 120},
			s:       State{At: at, Req: BucketState{Limit: 60, TAT: at + 3e9, Sent: at + 2e9, Pending: 1e9}},
			wantLim: Limits{RPM: 120, Burst: DefaultBurst},
			wantReq: BucketState{Limit: 120, TAT: at + 1500e6},
		},
		{
			name:    "learned limit fills in an unconfigured one",
			conf:    Limits{},
			s:       State{At: at, Req: BucketState{Limit: 30, TAT: at + 4e9}, LearnedRPM: 30},
			wantLim: Limits{RPM: 30, Burst: DefaultBurst},
			wantReq: BucketState{Limit: 30, TAT: at + 4e9},
		},
		{
			name:    "no limit here: the bucket is not modelled",
			conf:    Limits{},
			s:       State{At: at, Req: BucketState{Limit: 30, TAT: at + 4e9}},
			wantLim: Limits{Burst: DefaultBurst},
			wantReq: BucketState{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.conf)
			l.SetState(tt.s)
			if got := l.Limits(); got != tt.wantLim {
				t.Errorf("Limits = %+v, want %+v", got, tt.wantLim)
			}
			if got := l.State().Req; got != tt.wantReq {
				t.Errorf("Req = %+v, want %+v", got, tt.wantReq)
			}
		})
	}
}

// TestRaise checks that LearnAsOf and Exhausted are their Raise applied, so
// that a shared store given the Raise does what the limiter does.
func TestRaise(t *testing.T) {
	tests := []struct {
		name string
		conf Limits
		hdr  map[string]string
		asOf time.Duration
		// until > 0 records a 429 instead of learning.
		until  time.Duration
		tokens int64
	}{
		{name: "pull", conf: Limits{RPM: 60, TPM: 60000}, asOf: -time.Second, hdr: map[string]string{
			"x-ratelimit-remaining-requests": "50", "x-ratelimit-reset-requests": "10s",
			"x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "20s",
		}},
		{name: "learned limit changes the rate first", conf: Limits{}, hdr: map[string]string{
			"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "100",
			"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "999",
		}},
		{name: "nothing to learn", conf: Limits{RPM: 60}, hdr: map[string]string{"x-other": "1"}},
		{name: "exhausted", conf: Limits{RPM: 60, TPM: 60000}, until: 5 * time.Second, tokens: 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			direct, viaRaise := busy(tt.conf), busy(tt.conf)
			now := t0.Add(10 * time.Millisecond)
			if tt.until > 0 {
				direct.Exhausted(now.Add(tt.until), tt.tokens)
				viaRaise.ApplyRaise(now, viaRaise.ExhaustedRaise(now.Add(tt.until), tt.tokens))
			} else {
				h := headers(tt.hdr)
				direct.LearnAsOf(now.Add(tt.asOf), now, h)
				viaRaise.ApplyRaise(now, viaRaise.LearnRaise(now.Add(tt.asOf), now, h))
			}
			got, want := viaRaise.State(), direct.State()
			got.At, want.At = 0, 0 // Exhausted does not advance the latest time seen
			if got != want {
				t.Errorf("via Raise %+v, want %+v", got, want)
			}
		})
	}
}

func TestSetLimitsAt(t *testing.T) {
	l := NewLimiter(Limits{RPM: 600})
	for range 4 {
		_, _, _ = l.Reserve(t0, 0)
	}
	// Four requests at 600 RPM leave a backlog of 400ms at t0, 300ms at
	// t0+100ms, which becomes 150ms at 1200 RPM.
	l.SetLimitsAt(t0.Add(100*time.Millisecond), Limits{RPM: 1200})
	if got := time.Duration(l.State().Req.TAT - t0.UnixNano()); got != 250*time.Millisecond {
		t.Errorf("tat = +%v, want +250ms", got)
	}
}

// TestApplyRaiseReports checks that ApplyRaise says whether it raised
// anything: a floor already met, applied again, changes nothing.
func TestApplyRaiseReports(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := NewLimiter(Limits{RPM: 60})
	r := l.ExhaustedRaise(now.Add(10*time.Second), 0)
	if !l.ApplyRaise(now, r) {
		t.Fatal("a cool-down and a full bucket: reported no change")
	}
	if l.ApplyRaise(now, r) {
		t.Error("the same floors again: reported a change")
	}
	if !l.ApplyRaise(now, Raise{LearnedTPM: 1000}) {
		t.Error("a new learned TPM: reported no change")
	}
	if l.ApplyRaise(now, Raise{}) {
		t.Error("an empty raise: reported a change")
	}
}
