package store

import "crypto/sha256"

// Hash returns the digest View.Hash will have once the loader's content
// is loaded, so a restore can be verified before it replaces anything.
func (l *Loader) Hash() [32]byte {
	h := sha256.New()
	for _, name := range sortedKeys(l.tables) {
		t := l.tables[name]
		hashSchema(h, t.schema, t.createRev)
		t.rows.Scan(func(raw string) bool {
			writeLenString(h, raw)
			return true
		})
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
