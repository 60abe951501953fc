package store

import (
	"math/rand/v2"
	"testing"
)

// Items order exactly as their rows' keys do: the inline prefix decides
// only where it differs, and agrees with the keys there. Keys are drawn
// short and from few bytes (zero among them), so that equal prefixes,
// prefixes of one another and zero padding against real zero bytes all
// occur.
func TestRowItemsOrderLikeKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	key := func() string {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = []byte{0, 1, 'a', 0xff}[r.IntN(4)]
		}
		return string(b)
	}
	for range 200_000 {
		ka, kb := key(), key()
		a, b := itemOf(keyProbe([]byte(ka))), itemOf(keyProbe([]byte(kb)))
		if got, want := lessRowItem(a, b), ka < kb; got != want {
			t.Fatalf("less(%q, %q) = %v, want %v", ka, kb, got, want)
		}
		if a.pfx != b.pfx && (a.pfx < b.pfx) != (ka < kb) {
			t.Fatalf("prefixes of %q and %q order unlike the keys", ka, kb)
		}
	}
}
