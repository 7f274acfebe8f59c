;; drop_debug, hand-written against docs/abi.md: drops events whose `level` is the string
;; "DEBUG" (written without escapes). Declares one field, so the host builds a projected
;; index with one node per event and copies no raw bytes.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $vbuf (mut i32) (i32.const 0))
  (global $vcap (mut i32) (i32.const 0))

  ;; FieldsDecl at 32: paths_ptr=16, paths_len=5, flags=0
  (data (i32.const 16) "level")
  (data (i32.const 32) "\10\00\00\00\05\00\00\00\00\00\00\00")

  (func (export "sluicebox_abi_version") (result i32) (i32.const 1))
  (func (export "sluicebox_fields") (result i32) (i32.const 32))

  ;; Bump allocator: aligns, grows memory as needed, returns 0 when it cannot.
  (func $alloc (export "sluicebox_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32) (local $end i32) (local $pages i32)
    (if (i32.eqz (local.get $align)) (then (local.set $align (i32.const 1))))
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.lt_u (local.get $end) (local.get $p)) (then (return (i32.const 0))))
    (local.set $pages (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (local $n i32) (local $nodes i32) (local $data i32) (local $i i32) (local $node i32) (local $v i32)
    (local.set $n (i32.load offset=4 (local.get $h)))
    (local.set $nodes (i32.load offset=12 (local.get $h)))
    (local.set $data (i32.load offset=20 (local.get $h)))
    ;; one verdict byte per event, in a buffer reused across batches
    (if (i32.gt_u (local.get $n) (global.get $vcap))
      (then
        (global.set $vbuf (call $alloc (local.get $n) (i32.const 1)))
        (if (i32.eqz (global.get $vbuf)) (then (return (i32.const -3))))
        (global.set $vcap (local.get $n))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $node (i32.add (local.get $nodes) (i32.mul (local.get $i) (i32.const 24))))
        (local.set $v (i32.const 0)) ;; keep
        ;; kind == string && value_len == 5 && bytes == "DEBUG"
        (if (i32.and
              (i32.eq (i32.load8_u offset=16 (local.get $node)) (i32.const 5))
              (i32.eq (i32.load offset=12 (local.get $node)) (i32.const 5)))
          (then
            (local.set $node (i32.add (local.get $data) (i32.load offset=8 (local.get $node))))
            (if (i32.and
                  (i32.eq (i32.load (local.get $node)) (i32.const 0x55424544)) ;; "DEBU"
                  (i32.eq (i32.load8_u offset=4 (local.get $node)) (i32.const 0x47))) ;; "G"
              (then (local.set $v (i32.const 1)))))) ;; drop
        (i32.store8 (i32.add (global.get $vbuf) (local.get $i)) (local.get $v))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store offset=36 (local.get $h) (global.get $vbuf)) ;; verdicts_ptr
    (i32.store offset=40 (local.get $h) (i32.const 0))      ;; records_ptr
    (i32.store offset=44 (local.get $h) (i32.const 0))      ;; records_len
    (i32.const 0))
)
