;; tag_service, hand-written against docs/abi.md: a map filter. For every event it answers
;; verdict EDIT (2) with two records:
;;   SET    "env" = "prod"        (A = path, B = JSON value text)
;;   RENAME "msg" -> "message"    (A = source path, B = destination path)
;; RENAME of an absent source is a no-op, so the filter never needs to look at `msg`. It still
;; declares `msg` as its one field: a declaration makes the host build a one-node projected
;; index and copy no raw bytes, instead of a full index plus every event's raw bytes.
;;
;; Memory map (all offsets are addresses in this module's memory):
;;   16..19   "msg"       the declared path, also operand A of RENAME
;;   24..27   "env"       operand A of SET
;;   32..38   "\"prod\""  operand B of SET: the JSON string "prod", quotes included
;;   40..47   "message"   operand B of RENAME
;;   48..63   "batch too large" (a status message)
;;   64..75   the FieldsDecl
;;   1024..   the bump heap that sluicebox_alloc hands out (never freed)
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  ;; One buffer for the answer, allocated on the first batch and reused: first the record
  ;; stream (56 bytes per event), then the verdicts (1 byte per event). $cap is the number of
  ;; events it has room for; a bigger batch allocates a bigger buffer (the old one is leaked:
  ;; a bump heap cannot free, and batch sizes are bounded, so this happens a few times at most).
  (global $buf (mut i32) (i32.const 0))
  (global $cap (mut i32) (i32.const 0))

  (data (i32.const 16) "msg")
  (data (i32.const 24) "env")
  (data (i32.const 32) "\"prod\"")
  (data (i32.const 40) "message")
  (data (i32.const 48) "batch too large")
  ;; FieldsDecl { paths_ptr = 16, paths_len = 3, flags = 0 }, little-endian u32s.
  (data (i32.const 64) "\10\00\00\00\03\00\00\00\00\00\00\00")

  (func (export "sluicebox_abi_version") (result i32) (i32.const 1))
  (func (export "sluicebox_fields") (result i32) (i32.const 64))

  ;; sluicebox_alloc(size, align): `size` bytes aligned to `align` (a power of two; the host
  ;; always passes 8), growing memory as needed; 0 when it cannot. Growing past the host's
  ;; memory cap traps instead of returning -1, so a 0 here means "past the module's own
  ;; 4 GiB address space".
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

  ;; Writes one record at $at and returns where the next one starts:
  ;;   +0  u32 event   +4 u8 op   +5 three reserved zero bytes   +8 u32 a_len   +12 u32 b_len
  ;;   +16 operand A, then operand B, then zero bytes up to a multiple of 4.
  ;; The padding rule is relative to the start of the stream; the stream starts 8-aligned
  ;; here, so padding to an absolute multiple of 4 is the same thing.
  (func $record (param $at i32) (param $event i32) (param $op i32)
                (param $a i32) (param $a_len i32) (param $b i32) (param $b_len i32) (result i32)
    (local $end i32) (local $next i32)
    (i32.store (local.get $at) (local.get $event))
    (i32.store offset=4 (local.get $at) (local.get $op)) ;; op byte + reserved bytes = 0
    (i32.store offset=8 (local.get $at) (local.get $a_len))
    (i32.store offset=12 (local.get $at) (local.get $b_len))
    (memory.copy (i32.add (local.get $at) (i32.const 16)) (local.get $a) (local.get $a_len))
    (memory.copy
      (i32.add (i32.add (local.get $at) (i32.const 16)) (local.get $a_len))
      (local.get $b) (local.get $b_len))
    (local.set $end
      (i32.add (i32.add (local.get $at) (i32.const 16)) (i32.add (local.get $a_len) (local.get $b_len))))
    (local.set $next (i32.and (i32.add (local.get $end) (i32.const 3)) (i32.const -4)))
    (memory.fill (local.get $end) (i32.const 0) (i32.sub (local.get $next) (local.get $end)))
    (local.get $next))

  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (local $n i32) (local $i i32) (local $at i32) (local $verdicts i32)
    (local.set $n (i32.load offset=4 (local.get $h))) ;; event_count
    ;; Room for this batch? Each event needs 2 records of 28 bytes + 1 verdict byte = 57.
    (if (i32.gt_u (local.get $n) (global.get $cap))
      (then
        ;; 57 * n must not overflow: refuse absurd batches with a status and a message.
        (if (i32.gt_u (local.get $n) (i32.const 0x1000000))
          (then
            (i32.store offset=48 (local.get $h) (i32.const 48)) ;; message_ptr
            (i32.store offset=52 (local.get $h) (i32.const 15)) ;; message_len
            (return (i32.const -3))))                            ;; ErrorCode::OutOfMemory
        (global.set $buf (call $alloc (i32.mul (local.get $n) (i32.const 57)) (i32.const 8)))
        (if (i32.eqz (global.get $buf)) (then (return (i32.const -3))))
        (global.set $cap (local.get $n))))
    ;; Records at $buf, verdicts after room for $cap events' records.
    (local.set $at (global.get $buf))
    (local.set $verdicts (i32.add (global.get $buf) (i32.mul (global.get $cap) (i32.const 56))))
    ;; Records must name events in non-decreasing order: one pass, event by event.
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8 (i32.add (local.get $verdicts) (local.get $i)) (i32.const 2)) ;; EDIT
        ;; SET (op 1): A = "env", B = "\"prod\""
        (local.set $at (call $record (local.get $at) (local.get $i) (i32.const 1)
                                     (i32.const 24) (i32.const 3) (i32.const 32) (i32.const 6)))
        ;; RENAME (op 3): A = "msg", B = "message"
        (local.set $at (call $record (local.get $at) (local.get $i) (i32.const 3)
                                     (i32.const 16) (i32.const 3) (i32.const 40) (i32.const 7)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; The header's out fields (the host zeroed offsets 36..64 before the call).
    (i32.store offset=36 (local.get $h) (local.get $verdicts))                     ;; verdicts_ptr
    (i32.store offset=40 (local.get $h) (global.get $buf))                        ;; records_ptr
    (i32.store offset=44 (local.get $h) (i32.sub (local.get $at) (global.get $buf))) ;; records_len
    (i32.const 0)) ;; STATUS_OK
)
