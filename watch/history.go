package watch

import "sort"

// blockEvents is the number of events in one history block (about 112 KiB).
const blockEvents = 1024

// history is the retained events, in publication order, addressed by
// absolute position: the n-th event ever published is at position n-1,
// and positions stay valid for as long as the event is retained.
//
// Why blocks instead of one slice: the history holds up to 200,000 events
// by default (over 20 MiB of Event structs). As one slice, every time an
// append outgrew it (by only 1.25x once large) the runtime allocated a
// new array, zeroed it and copied all of it, and dropping the oldest
// events needed a periodic copy of the rest to the front. On the apply
// path of a member under a write load that was 8-14% of its CPU. Blocks
// are allocated one at a time, never copied, and freed (or kept as the
// one spare) when their last event is dropped.
type history struct {
	blocks [][]Event // each blockEvents long; the first event is blocks[0][off]
	off    int
	start  int // absolute position of the first retained event
	end    int // absolute position after the last
	spare  []Event
}

func (h *history) len() int { return h.end - h.start }

// at returns the event at absolute position p, start <= p < end.
func (h *history) at(p int) *Event {
	i := p - h.start + h.off
	return &h.blocks[i/blockEvents][i%blockEvents]
}

func (h *history) push(e Event) {
	i := h.end - h.start + h.off
	if i/blockEvents == len(h.blocks) {
		b := h.spare
		h.spare = nil
		if b == nil {
			b = make([]Event, blockEvents)
		}
		h.blocks = append(h.blocks, b)
	}
	h.blocks[i/blockEvents][i%blockEvents] = e
	h.end++
}

// front returns the oldest retained event; the history must not be empty.
func (h *history) front() *Event { return &h.blocks[0][h.off] }

// popFront drops the oldest retained event.
func (h *history) popFront() {
	h.blocks[0][h.off] = Event{} // the strings are the store's: let them go
	h.start++
	h.off++
	if h.off == blockEvents || h.start == h.end {
		h.releaseFirst()
	}
}

// releaseFirst frees the first block, whose events are all dropped (and
// zeroed), keeping it as the spare.
func (h *history) releaseFirst() {
	if len(h.blocks) == 0 {
		return
	}
	if h.spare == nil {
		h.spare = h.blocks[0]
	}
	h.blocks[0] = nil
	h.blocks = h.blocks[1:]
	h.off = 0
	if len(h.blocks) == 0 {
		h.blocks = nil // start the small slice of blocks afresh
	}
}

// clear drops every retained event; positions continue from end.
func (h *history) clear() {
	for h.start < h.end {
		h.popFront()
	}
}

// searchRev returns the first absolute position whose event's revision is
// above rev (end if none is).
func (h *history) searchRev(rev uint64) int {
	return h.start + sort.Search(h.len(), func(i int) bool { return h.at(h.start+i).Rev > rev })
}

// copyRange returns a copy of the events at positions [from, to).
func (h *history) copyRange(from, to int) []Event {
	out := make([]Event, 0, to-from)
	for from < to {
		i := from - h.start + h.off
		b := h.blocks[i/blockEvents]
		n := min(blockEvents-i%blockEvents, to-from)
		out = append(out, b[i%blockEvents:i%blockEvents+n]...)
		from += n
	}
	return out
}
