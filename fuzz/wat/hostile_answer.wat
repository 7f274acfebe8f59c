;; Guest of fuzz/fuzz_targets/guest_results.rs. It decides nothing: every result it hands
;; the host comes from a blob that the fuzzer passes as the hex parameter "b", so arbitrary
;; statuses, pointers, lengths and bytes end up in real guest memory for the host to decode.
;;
;; Memory: 0..0x10000 zero; the decoded blob at 0x10000 (at most 0x20000 bytes); the bump
;; heap (sluicebox_alloc: init block, batch buffers) from 0x30000. Blob words (little-endian):
;;   +0  init status          +4  init message ptr     +8  init message len
;;   +12 FieldsDecl ptr       +16 pages to grow in init (low 2 bits)
;;   +20 filter status        +24 verdicts_ptr  +28 records_ptr  +32 records_len
;;   +36 message ptr          +40 message len   +44 flags (1: trap in filter, 2: trap in init)
;;   +48 payload (whatever the pointers above aim at)
;; The harness makes a second variant without `sluicebox_fields` by deleting the line
;; marked FIELDS.
(module
  (memory (export "memory") 3)
  (global $heap (mut i32) (i32.const 0x30000))

  (func (export "sluicebox_abi_version") (result i32) (i32.const 1))

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

  ;; One lowercase hex digit.
  (func $nib (param $c i32) (result i32)
    (if (result i32) (i32.le_u (local.get $c) (i32.const 57))
      (then (i32.sub (local.get $c) (i32.const 48)))
      (else (i32.sub (local.get $c) (i32.const 87)))))

  (func (export "sluicebox_init") (param $p i32) (result i32)
    (local $src i32) (local $n i32) (local $i i32)
    ;; The parameters are the JSON text {"b":"HEX"}: HEX starts 6 bytes in, ends 2 before
    ;; the end.
    (local.set $src (i32.add (i32.load offset=4 (local.get $p)) (i32.const 6)))
    (local.set $n
      (i32.shr_u (i32.sub (i32.load offset=8 (local.get $p)) (i32.const 8)) (i32.const 1)))
    (if (i32.gt_u (local.get $n) (i32.const 0x20000)) (then (local.set $n (i32.const 0x20000))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8 offset=0x10000 (local.get $i)
          (i32.or
            (i32.shl (call $nib (i32.load8_u (local.get $src))) (i32.const 4))
            (call $nib (i32.load8_u offset=1 (local.get $src)))))
        (local.set $src (i32.add (local.get $src) (i32.const 2)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.and (i32.load (i32.const 0x1002c)) (i32.const 2)) (then unreachable))
    (drop (memory.grow (i32.and (i32.load (i32.const 0x10010)) (i32.const 3))))
    (i32.store offset=12 (local.get $p) (i32.load (i32.const 0x10004)))
    (i32.store offset=16 (local.get $p) (i32.load (i32.const 0x10008)))
    (i32.load (i32.const 0x10000)))

  (func (export "sluicebox_fields") (result i32) (i32.load (i32.const 0x1000c))) ;; FIELDS

  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (if (i32.and (i32.load (i32.const 0x1002c)) (i32.const 1)) (then unreachable))
    (i32.store offset=36 (local.get $h) (i32.load (i32.const 0x10018))) ;; verdicts_ptr
    (i32.store offset=40 (local.get $h) (i32.load (i32.const 0x1001c))) ;; records_ptr
    (i32.store offset=44 (local.get $h) (i32.load (i32.const 0x10020))) ;; records_len
    (i32.store offset=48 (local.get $h) (i32.load (i32.const 0x10024))) ;; message ptr
    (i32.store offset=52 (local.get $h) (i32.load (i32.const 0x10028))) ;; message len
    (i32.load (i32.const 0x10014)))
)
