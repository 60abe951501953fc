package store

// Hash returns the digest View.Hash will have once the loader's content is
// loaded, so a restore can be verified before it replaces anything. It is
// computed as rows arrive, while they are in cache.
func (l *Loader) Hash() uint64 { return l.hash.Sum64() }
