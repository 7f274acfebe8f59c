package sluicebox

// Memory the host can see. Every buffer whose address crosses the ABI (the host's batch
// buffers, the answer buffers, messages, the field declaration) is a block: a Go byte slice
// at a fixed address in linear memory. The Go garbage collector never moves heap objects,
// and the registry keeps every block reachable, so the collector never reuses one either.
// Host pointers are resolved by looking them up in the registry: a range that is not
// inside one block is refused, so the package never reads memory it did not hand out.

type block struct {
	addr uint32
	b    []byte
	own  bool // one of the package's own buffers (may be released); else the host's
}

var blocks []block

// alloc returns `size` (>= 1) zeroed bytes aligned to `align` (a power of two), and their
// address; 0 when it cannot.
func alloc(size, align uint32, own bool) (uint32, []byte) {
	if size == 0 {
		size = 1
	}
	if align == 0 {
		align = 1
	}
	if align&(align-1) != 0 || size > 1<<31 {
		return 0, nil
	}
	addr, b := place(size, align)
	if addr == 0 {
		return 0, nil
	}
	blocks = append(blocks, block{addr: addr, b: b, own: own})
	return addr, b
}

// release forgets the package's own block at `addr` (the garbage collector may then reuse
// it). Host blocks are never released: the host keeps writing into them.
func release(addr uint32) {
	for i := len(blocks) - 1; i >= 0; i-- {
		if blocks[i].addr == addr && blocks[i].own {
			blocks = append(blocks[:i], blocks[i+1:]...)
			return
		}
	}
}

// region returns the n bytes at ptr when they lie inside one block; an empty range is
// always fine.
func region(ptr uint32, n uint64) ([]byte, bool) {
	if n == 0 {
		return []byte{}, true
	}
	for i := len(blocks) - 1; i >= 0; i-- {
		bl := &blocks[i]
		if ptr < bl.addr {
			continue
		}
		off := uint64(ptr - bl.addr)
		if off+n <= uint64(len(bl.b)) {
			return bl.b[off : off+n : off+n], true
		}
	}
	return nil, false
}
