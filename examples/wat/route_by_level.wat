;; route_by_level, hand-written against docs/abi.md: sends events whose `level` is the string
;; "ERROR" (written without escapes) to the route `error` and every other event to `other`,
;; unchanged (verdict KEEP with one ROUTE record each). Declares one field, so the host
;; builds a projected index with one node per event.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $buf (mut i32) (i32.const 0))
  (global $cap (mut i32) (i32.const 0))

  ;; FieldsDecl at 32: paths_ptr=16, paths_len=5, flags=0
  (data (i32.const 16) "level")
  (data (i32.const 32) "\10\00\00\00\05\00\00\00\00\00\00\00")
  ;; The route names, 5 bytes each.
  (data (i32.const 48) "error")
  (data (i32.const 56) "other")
  (data (i32.const 64) "batch too large")

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
    (local $n i32) (local $nodes i32) (local $data i32) (local $i i32) (local $node i32)
    (local $name i32) (local $at i32) (local $verdicts i32)
    (local.set $n (i32.load offset=4 (local.get $h)))
    (local.set $nodes (i32.load offset=12 (local.get $h)))
    (local.set $data (i32.load offset=20 (local.get $h)))
    ;; Each event: one ROUTE record (16-byte head + 5-byte name, padded to 24) + 1 verdict.
    (if (i32.gt_u (local.get $n) (global.get $cap))
      (then
        (if (i32.gt_u (local.get $n) (i32.const 0x1000000))
          (then
            (i32.store offset=48 (local.get $h) (i32.const 64)) ;; message_ptr
            (i32.store offset=52 (local.get $h) (i32.const 15)) ;; message_len
            (return (i32.const -3))))
        (global.set $buf (call $alloc (i32.mul (local.get $n) (i32.const 25)) (i32.const 8)))
        (if (i32.eqz (global.get $buf)) (then (return (i32.const -3))))
        (global.set $cap (local.get $n))))
    (local.set $at (global.get $buf))
    (local.set $verdicts (i32.add (global.get $buf) (i32.mul (global.get $cap) (i32.const 24))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $node (i32.add (local.get $nodes) (i32.mul (local.get $i) (i32.const 24))))
        (local.set $name (i32.const 56)) ;; "other"
        ;; kind == string && value_len == 5 && bytes == "ERROR"
        (if (i32.and
              (i32.eq (i32.load8_u offset=16 (local.get $node)) (i32.const 5))
              (i32.eq (i32.load offset=12 (local.get $node)) (i32.const 5)))
          (then
            (local.set $node (i32.add (local.get $data) (i32.load offset=8 (local.get $node))))
            (if (i32.and
                  (i32.eq (i32.load (local.get $node)) (i32.const 0x4f525245)) ;; "ERRO"
                  (i32.eq (i32.load8_u offset=4 (local.get $node)) (i32.const 0x52))) ;; "R"
              (then (local.set $name (i32.const 48)))))) ;; "error"
        (i32.store8 (i32.add (local.get $verdicts) (local.get $i)) (i32.const 0)) ;; KEEP
        ;; ROUTE record: event, op 6 (reserved 0), a_len 5, b_len 0, name, 3 zero bytes.
        (i32.store (local.get $at) (local.get $i))
        (i32.store offset=4 (local.get $at) (i32.const 6))
        (i32.store offset=8 (local.get $at) (i32.const 5))
        (i32.store offset=12 (local.get $at) (i32.const 0))
        (i64.store offset=16 (local.get $at) (i64.const 0))
        (memory.copy (i32.add (local.get $at) (i32.const 16)) (local.get $name) (i32.const 5))
        (local.set $at (i32.add (local.get $at) (i32.const 24)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store offset=36 (local.get $h) (local.get $verdicts))                       ;; verdicts_ptr
    (i32.store offset=40 (local.get $h) (global.get $buf))                           ;; records_ptr
    (i32.store offset=44 (local.get $h) (i32.sub (local.get $at) (global.get $buf))) ;; records_len
    (i32.const 0))
)
