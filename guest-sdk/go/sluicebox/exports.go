package sluicebox

// The module's exports (docs/abi.md, section 3). Outside wasm the directives are ignored,
// and TestInit / TestRun call these functions the way the host would.

//go:wasmexport sluicebox_abi_version
func sluiceboxABIVersion() int32 { return ABIVersion }

//go:wasmexport sluicebox_alloc
func sluiceboxAlloc(size, align int32) int32 {
	if size < 0 || align <= 0 {
		return 0
	}
	addr, _ := alloc(uint32(size), uint32(align), false)
	return int32(addr)
}

//go:wasmexport sluicebox_init
func sluiceboxInit(block int32) int32 { return initialize(uint32(block)) }

//go:wasmexport sluicebox_fields
func sluiceboxFields() int32 { return int32(fields()) }

//go:wasmexport sluicebox_filter
func sluiceboxFilter(header int32) int32 { return run(uint32(header)) }
