package watch

import (
	"math/rand/v2"
	"testing"
)

// TestHistoryAgainstASlice runs random pushes, drops, clears, searches and
// copies on the block history and on a plain slice, across many block
// boundaries, and requires the same answers.
func TestHistoryAgainstASlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var h history
	var model []Event // model[i] is at absolute position start+i
	start := 0
	rev := uint64(0)
	for step := range 200_000 {
		switch r := rng.IntN(100); {
		case r < 55:
			// Several events may share a revision (one batch).
			if rng.IntN(3) > 0 {
				rev++
			}
			e := Event{Rev: rev, Key: string(rune('a' + step%26))}
			h.push(e)
			model = append(model, e)
		case r < 95:
			if len(model) > 0 {
				if *h.front() != model[0] {
					t.Fatalf("step %d: front %+v, want %+v", step, *h.front(), model[0])
				}
				h.popFront()
				model, start = model[1:], start+1
			}
		case r < 96:
			h.clear()
			start += len(model)
			model = nil
		default:
			if len(model) == 0 {
				break
			}
			after := model[0].Rev - 1 + uint64(rng.IntN(int(model[len(model)-1].Rev-model[0].Rev)+2))
			want := start
			for want-start < len(model) && model[want-start].Rev <= after {
				want++
			}
			if got := h.searchRev(after); got != want {
				t.Fatalf("step %d: searchRev(%d) = %d, want %d", step, after, got, want)
			}
			from := start + rng.IntN(len(model))
			to := from + rng.IntN(start+len(model)-from+1)
			got := h.copyRange(from, to)
			if len(got) != to-from {
				t.Fatalf("step %d: copyRange(%d, %d) has %d events", step, from, to, len(got))
			}
			for i := range got {
				if got[i] != model[from-start+i] || *h.at(from + i) != got[i] {
					t.Fatalf("step %d: position %d: %+v, want %+v", step, from+i, got[i], model[from-start+i])
				}
			}
		}
		if h.len() != len(model) || h.start != start || h.end != start+len(model) {
			t.Fatalf("step %d: history [%d, %d), model [%d, %d)", step, h.start, h.end, start, start+len(model))
		}
		// Blocks are freed as they empty: never more than the live events
		// need, plus the partly used first and last.
		if max := (len(model)+blockEvents-1)/blockEvents + 1; len(h.blocks) > max {
			t.Fatalf("step %d: %d blocks for %d events", step, len(h.blocks), len(model))
		}
	}
}

// A dropped event releases the store's strings it pointed to, and a
// reused block starts clean.
func TestHistoryDropsZeroTheEvents(t *testing.T) {
	var h history
	for i := range 3 * blockEvents {
		h.push(Event{Rev: uint64(i + 1), Row: "row"})
	}
	first := h.blocks[0]
	for range blockEvents + 10 {
		h.popFront()
	}
	for i, e := range first {
		if e != (Event{}) {
			t.Fatalf("event %d of a released block still holds %+v", i, e)
		}
	}
	if &h.spare[0] != &first[0] {
		t.Fatalf("the released block was not kept as the spare")
	}
	for i := range 10 {
		if h.blocks[0][i] != (Event{}) {
			t.Fatalf("dropped event %d still holds %+v", i, h.blocks[0][i])
		}
	}
}
