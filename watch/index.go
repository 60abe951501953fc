package watch

import "sort"

// tableWatchers indexes the live watchers of one table: one interval set
// per index definition ("" for the primary key).
type tableWatchers struct {
	groups map[string]*group
}

type group struct {
	index   string
	sortKey func(row string) (string, bool)
	set     intervalSet
}

func (h *Hub) addLocked(w *Watcher) {
	tw := h.tables[w.m.Table]
	if tw == nil {
		tw = &tableWatchers{groups: map[string]*group{}}
		h.tables[w.m.Table] = tw
	}
	key := w.m.Index + "\x00" + w.m.IndexDef
	g := tw.groups[key]
	if g == nil {
		g = &group{index: w.m.Index, sortKey: w.m.SortKey}
		tw.groups[key] = g
	}
	g.set.add(w)
}

func (tw *tableWatchers) remove(w *Watcher) {
	w.removed = true
	for k, g := range tw.groups {
		if g.set.remove(w) && g.set.len() == 0 {
			delete(tw.groups, k)
		}
	}
}

func (tw *tableWatchers) empty() bool { return len(tw.groups) == 0 }

func (tw *tableWatchers) watchers() []*Watcher {
	var out []*Watcher
	for _, g := range tw.groups {
		out = append(out, g.set.ws...)
	}
	return out
}

// match calls fn for every watcher whose range holds the event's sort key
// before or after the change (fn de-duplicates).
func (tw *tableWatchers) match(e *Event, fn func(*Watcher)) {
	for _, g := range tw.groups {
		if g.index == "" {
			g.set.query(e.Key, fn)
			continue
		}
		for _, row := range [2]string{e.Row, e.Prev} {
			if row == "" {
				continue
			}
			if k, ok := g.sortKey(row); ok {
				g.set.query(k, fn)
			}
		}
	}
}

// drop ends the watchers a dropped table or index concerns. A watcher
// that starts after the drop (from >= its revision) watches the table
// created since, and stays.
func (tw *tableWatchers) drop(h *Hub, e *Event) {
	for k, g := range tw.groups {
		if *e.Dropped != "" && g.index != *e.Dropped {
			continue
		}
		for _, w := range append([]*Watcher(nil), g.set.ws...) {
			if w.removed || e.Rev <= w.from {
				continue
			}
			_, err := w.endsAt(e)
			g.set.remove(w)
			w.end(err, e.Rev)
		}
		if g.set.len() == 0 {
			delete(tw.groups, k)
		}
	}
}

// intervalSet finds the intervals [lo, hi) that contain a key. It keeps
// the intervals sorted by lo with a running maximum of hi, so a query is a
// binary search plus a walk back over the intervals that may still reach
// the key: O(log n + matches) when ranges are narrow (one entity each, the
// common case), O(n) only when many wide ranges overlap. The sorted form
// is rebuilt lazily after adds and removes.
type intervalSet struct {
	ws    []*Watcher
	maxHi []string // maxHi[i]: largest hi among ws[:i+1]
	inf   []bool   // inf[i]: some interval in ws[:i+1] is unbounded
	dirty bool
}

func (s *intervalSet) len() int { return len(s.ws) }

func (s *intervalSet) add(w *Watcher) {
	s.ws = append(s.ws, w)
	s.dirty = true
}

// remove drops a watcher; it reports whether it was there.
func (s *intervalSet) remove(w *Watcher) bool {
	for i, x := range s.ws {
		if x == w {
			s.ws = append(s.ws[:i], s.ws[i+1:]...)
			s.dirty = true
			return true
		}
	}
	return false
}

func (s *intervalSet) rebuild() {
	sort.Slice(s.ws, func(i, j int) bool { return s.ws[i].lo < s.ws[j].lo })
	s.maxHi = s.maxHi[:0]
	s.inf = s.inf[:0]
	var mx string
	inf := false
	for _, w := range s.ws {
		if w.unbounded {
			inf = true
		} else if w.hi > mx {
			mx = w.hi
		}
		s.maxHi = append(s.maxHi, mx)
		s.inf = append(s.inf, inf)
	}
	s.dirty = false
}

func (s *intervalSet) query(k string, fn func(*Watcher)) {
	if s.dirty {
		s.rebuild()
	}
	i := sort.Search(len(s.ws), func(i int) bool { return s.ws[i].lo > k })
	for j := i - 1; j >= 0; j-- {
		if !s.inf[j] && s.maxHi[j] <= k {
			return
		}
		if w := s.ws[j]; w.contains(k) {
			fn(w)
		}
	}
}
