use super::*;
use crate::parse::Parser;
use proptest::prelude::*;
use serde_json::{Value, json};

fn framer(start: u64) -> Framer {
    Framer::new(1024, 1 << 20, 1 << 20, 64 << 10).starting_at(start)
}

fn decoder(format: ContainerFormat, merge_json: bool) -> ContainerDecoder {
    let settings = ContainerSettings {
        format,
        merge_json,
        ..ContainerSettings::default()
    };
    ContainerDecoder::new(framer(0), settings, "/var/log/pods/ns_pod_uid/c/0.log")
}

/// What the decoder sent, batch by batch.
#[derive(Default, Debug)]
struct Sent {
    events: Vec<Value>,
    /// (line, offset) of each event.
    origins: Vec<(u64, u64)>,
    dead: Vec<DeadLetter>,
    /// The end position of each batch sent.
    ends: Vec<u64>,
    received: u64,
    dead_lettered: u64,
}

impl Sent {
    fn take(&mut self, d: &ContainerDecoder, b: &mut Batch) {
        let before = b.dead.len();
        // Every event must be JSON our own parser accepts.
        Parser::new(64, 64).parse_batch(b);
        assert_eq!(
            b.dead.len(),
            before,
            "our parser rejected an event: {:?}",
            b.dead
        );
        for e in b.output().iter() {
            self.events.push(serde_json::from_slice(e.bytes).unwrap());
            self.origins.push((e.line, e.offset));
        }
        self.dead.append(&mut b.dead);
        self.ends.push(d.position());
        self.received += b.stats.received;
        self.dead_lettered += b.stats.dead_lettered;
    }
}

/// Feeds `chunks` one after the other, then ends the input.
fn run(d: &mut ContainerDecoder, chunks: &[&[u8]]) -> Sent {
    let mut sent = Sent::default();
    let mut b = Batch::new();
    for chunk in chunks {
        let mut input = *chunk;
        while d.decode(&mut input, &mut b) {
            sent.take(d, &mut b);
            b = Batch::new();
        }
    }
    while d.decode_eof(&mut b) {
        sent.take(d, &mut b);
        b = Batch::new();
    }
    sent
}

/// Recorded from containerd 1.7 (`/var/log/pods/.../0.log`), times and ids changed.
const CRI_SAMPLE: &str = concat!(
    "2026-12-05T10:00:00.123456789Z stdout F {\"level\":\"INFO\",\"msg\":\"listening\",\"port\":8080}\n",
    "2026-12-05T10:00:00.223456789Z stderr F W1205 10:00:00.223 reflector.go:539] watch closed\n",
    "2026-12-05T10:00:01.000000001Z stdout P {\"level\":\"DEBUG\",\"msg\":\"a long \n",
    "2026-12-05T10:00:01.000000002Z stderr F interleaved \"quoted\" \\ back\tslash\n",
    "2026-12-05T10:00:01.000000003Z stdout P line split \n",
    "2026-12-05T10:00:01.000000004Z stdout F by the runtime\"}\n",
    "2026-12-05T10:00:02.5+01:00 stdout F\n",
    "2026-12-05T10:00:03Z stdout F caf\u{e9} \u{1F600}\n",
);

#[test]
fn cri_sample_events_merge_partials_and_keep_origins() {
    let mut d = decoder(ContainerFormat::Cri, false);
    let s = run(&mut d, &[CRI_SAMPLE.as_bytes()]);
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    let msgs: Vec<&str> = s
        .events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        [
            r#"{"level":"INFO","msg":"listening","port":8080}"#,
            "W1205 10:00:00.223 reflector.go:539] watch closed",
            "interleaved \"quoted\" \\ back\tslash",
            r#"{"level":"DEBUG","msg":"a long line split by the runtime"}"#,
            "",
            "caf\u{e9} \u{1F600}",
        ]
    );
    assert_eq!(s.events[1]["stream"], "stderr");
    assert_eq!(s.events[3]["stream"], "stdout");
    // A merged event takes its first fragment's time, line and offset.
    assert_eq!(s.events[3]["time"], "2026-12-05T10:00:01.000000001Z");
    let third_line = CRI_SAMPLE
        .lines()
        .take(2)
        .map(|l| l.len() as u64 + 1)
        .sum::<u64>();
    assert_eq!(s.origins[3], (3, third_line));
    assert_eq!(d.counts().merged, 1);
    assert_eq!(s.received, 6);
    assert_eq!(*s.ends.last().unwrap(), CRI_SAMPLE.len() as u64);
}

#[test]
fn merge_json_puts_object_members_in_the_event() {
    let mut d = decoder(ContainerFormat::Cri, true);
    let s = run(&mut d, &[CRI_SAMPLE.as_bytes()]);
    assert_eq!(
        s.events[0],
        json!({"stream":"stdout","time":"2026-12-05T10:00:00.123456789Z","level":"INFO","msg":"listening","port":8080})
    );
    assert_eq!(s.events[3]["msg"], "a long line split by the runtime");
    assert!(s.events[3].get("message").is_none());
    // Not objects: kept as the message.
    assert_eq!(
        s.events[1]["message"],
        "W1205 10:00:00.223 reflector.go:539] watch closed"
    );

    let input = concat!(
        "2026-12-05T10:00:00Z stdout F {\"time\":\"app's own\",\"a\":1}\n",
        "2026-12-05T10:00:00Z stdout F {}\n",
        "2026-12-05T10:00:00Z stdout F [1,2]\n",
        "2026-12-05T10:00:00Z stdout F {\"a\":1} trailing\n",
        "2026-12-05T10:00:00Z stdout F {\"a\":\n",
        "2026-12-05T10:00:00Z stdout F  { \"n\" : { \"deep\" : [true, null] } } \n",
    );
    let mut d = decoder(ContainerFormat::Cri, true);
    let s = run(&mut d, &[input.as_bytes()]);
    assert_eq!(s.events[0]["message"], "{\"time\":\"app's own\",\"a\":1}");
    assert_eq!(d.counts().json_conflicts, 1);
    assert_eq!(
        s.events[1],
        json!({"stream":"stdout","time":"2026-12-05T10:00:00Z"})
    );
    assert_eq!(s.events[2]["message"], "[1,2]");
    assert_eq!(s.events[3]["message"], "{\"a\":1} trailing");
    assert_eq!(s.events[4]["message"], "{\"a\":");
    assert_eq!(s.events[5]["n"], json!({"deep":[true,null]}));
}

/// Recorded from Docker 27 (`/var/lib/docker/containers/ID/ID-json.log`): a 16 KiB split
/// record, stderr, and escapes.
fn docker_sample() -> String {
    let long = "x".repeat(16 * 1024);
    format!(
        concat!(
            "{{\"log\":\"starting nginx 1.27\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-05T10:00:00.000000001Z\"}}\n",
            "{{\"log\":\"{long}\",\"stream\":\"stdout\",\"time\":\"2026-12-05T10:00:01.000000001Z\"}}\n",
            "{{\"log\":\"2026/12/05 10:00:01 [error] open() \\\"/x\\\" failed\\n\",\"stream\":\"stderr\",\"time\":\"2026-12-05T10:00:01.000000002Z\"}}\n",
            "{{\"log\":\"tail of the long line\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-05T10:00:01.000000003Z\"}}\n",
            "{{\"log\":\"\\u001b[31mred\\u001b[0m \\u00e9\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-05T10:00:02Z\",\"attrs\":{{\"tag\":\"web\"}}}}\n",
        ),
        long = long
    )
}

#[test]
fn docker_sample_merges_16k_splits() {
    let input = docker_sample();
    let mut d = decoder(ContainerFormat::Docker, false);
    let s = run(&mut d, &[input.as_bytes()]);
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    let msgs: Vec<String> = s
        .events
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs[0], "starting nginx 1.27");
    assert_eq!(msgs[1], "2026/12/05 10:00:01 [error] open() \"/x\" failed");
    assert_eq!(
        msgs[2],
        format!("{}tail of the long line", "x".repeat(16 * 1024))
    );
    assert_eq!(msgs[3], "\u{1b}[31mred\u{1b}[0m \u{e9}");
    assert_eq!(s.events[1]["stream"], "stderr");
    assert_eq!(s.events[2]["time"], "2026-12-05T10:00:01.000000001Z");
    // Auto detects Docker by the leading brace, and CRI otherwise, line by line.
    let mixed = format!("{input}{CRI_SAMPLE}");
    let mut d = decoder(ContainerFormat::Auto, false);
    let s = run(&mut d, &[mixed.as_bytes()]);
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    assert_eq!(s.events.len(), 4 + 6);
}

#[test]
fn malformed_lines_are_dead_lettered_with_file_and_offset() {
    let input = concat!(
        "2026-12-05T10:00:00Z stdout F one\n",
        "garbage without a header\n",
        "2026-12-05T10:00:00Z stdout P two \n",
        "2026-12-05T10:00:00Z stdlog F bad stream\n",
        "2026-12-05T10:00:00Z stdout F halves\n",
    );
    let mut d = decoder(ContainerFormat::Cri, false);
    let s = run(&mut d, &[input.as_bytes()]);
    let msgs: Vec<&str> = s
        .events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    // The group goes on across a malformed line.
    assert_eq!(msgs, ["one", "two halves"]);
    assert_eq!(s.dead.len(), 2);
    assert_eq!((s.dead[0].line, s.dead[0].offset), (2, 34));
    assert_eq!(
        s.dead[0].reason,
        "malformed CRI line in /var/log/pods/ns_pod_uid/c/0.log at offset 34: the time is not an RFC 3339 timestamp"
    );
    assert_eq!(s.dead[0].raw, b"garbage without a header");
    assert!(s.dead[1].reason.contains("neither stdout nor stderr"));
    // Conservation: every line ends as an event (merged) or a dead letter.
    assert_eq!(s.received, 4);
    assert_eq!(s.dead_lettered, 2);
    assert_eq!(d.counts().malformed, 2);

    let mut d = decoder(ContainerFormat::Docker, false);
    let s = run(
        &mut d,
        &[b"{\"log\":\"ok\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\":\"no time\\n\"}\n"],
    );
    assert_eq!(s.events.len(), 1);
    assert!(s.dead[0].reason.starts_with("malformed Docker json-file line in /var/log/pods/ns_pod_uid/c/0.log at offset 44: missing field `stream`"), "{}", s.dead[0].reason);
}

#[test]
fn the_position_never_passes_an_open_group() {
    let p1 = "2026-12-05T10:00:00Z stdout F before\n";
    let p2 = "2026-12-05T10:00:00Z stdout P first half \n";
    let p3 = "2026-12-05T10:00:00Z stderr F other stream\n";
    let p4 = "2026-12-05T10:00:00Z stdout F second half\n";
    let mut d = decoder(ContainerFormat::Cri, false);
    let mut b = Batch::new();
    let mut s = Sent::default();
    for chunk in [p1, p2, p3] {
        let mut input = chunk.as_bytes();
        while d.decode(&mut input, &mut b) {
            s.take(&d, &mut b);
            b = Batch::new();
        }
    }
    // "other stream" was sent, but the acknowledged end stops at the open group.
    assert_eq!(s.events.len(), 2);
    assert_eq!(*s.ends.last().unwrap(), p1.len() as u64);
    assert_eq!(d.position(), p1.len() as u64);
    let mut input = p4.as_bytes();
    assert!(d.decode(&mut input, &mut b));
    s.take(&d, &mut b);
    assert_eq!(s.events[2]["message"], "first half second half");
    assert_eq!(
        d.position(),
        (p1.len() + p2.len() + p3.len() + p4.len()) as u64
    );
    // Restarting from a checkpoint at the group's start reads the group whole again.
    let mut d2 = ContainerDecoder::new(framer(p1.len() as u64), ContainerSettings::default(), "f");
    let rest = format!("{p2}{p3}{p4}");
    let s2 = run(&mut d2, &[rest.as_bytes()]);
    assert_eq!(s2.events[1]["message"], "first half second half");
    assert_eq!(s2.origins[1].1, p1.len() as u64);
}

/// Regression (found by `kubernetes::kubernetes_kill9_torture`): a group that closed while
/// a group of the other stream was open used to let the position jump to the second
/// group's start, which lies before the first group's last fragment; a restart from there
/// emitted that fragment alone, half a message. Every position the decoder reports must be
/// one a restart reads only whole messages from.
#[test]
fn the_position_never_splits_overlapping_groups() {
    let lines = [
        "2026-12-05T10:00:00Z stdout F before\n",
        "2026-12-05T10:00:00Z stderr P one-a \n",
        "2026-12-05T10:00:00Z stdout P two-a \n",
        "2026-12-05T10:00:00Z stderr F one-b\n",
        "2026-12-05T10:00:00Z stdout P two-b \n",
        "2026-12-05T10:00:00Z stderr P three-a \n",
        "2026-12-05T10:00:00Z stdout F two-c\n",
        "2026-12-05T10:00:00Z stderr F three-b\n",
        "2026-12-05T10:00:00Z stdout F after\n",
    ];
    let whole = [
        "before",
        "one-a one-b",
        "two-a two-b two-c",
        "three-a three-b",
        "after",
    ];
    let all = lines.concat();
    // One line per decode call: a position is reported after every batch.
    let mut d = decoder(ContainerFormat::Cri, false);
    let mut b = Batch::new();
    let mut s = Sent::default();
    for line in lines {
        let mut input = line.as_bytes();
        while d.decode(&mut input, &mut b) {
            s.take(&d, &mut b);
            b = Batch::new();
        }
    }
    let got: Vec<&str> = s
        .events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "before",
            "one-a one-b",
            "two-a two-b two-c",
            "three-a three-b",
            "after"
        ]
    );
    // While the chain of overlapping groups is open, the position waits at its first line.
    let chain_start = lines[0].len() as u64;
    assert_eq!(s.ends[..3], [chain_start; 3], "{:?}", s.ends);
    assert_eq!(*s.ends.last().unwrap(), all.len() as u64);
    for &end in &s.ends {
        let mut again = ContainerDecoder::new(framer(end), ContainerSettings::default(), "f");
        let r = run(&mut again, &[&all.as_bytes()[end as usize..]]);
        for e in &r.events {
            let m = e["message"].as_str().unwrap();
            assert!(whole.contains(&m), "restart at {end}: {m:?}");
        }
    }
}

#[test]
fn a_dangling_partial_is_flushed_after_the_timeout() {
    let settings = ContainerSettings {
        partial_timeout: Duration::from_millis(50),
        ..ContainerSettings::default()
    };
    let mut d = ContainerDecoder::new(framer(0), settings, "f");
    let mut b = Batch::new();
    let line = "2026-12-05T10:00:00Z stdout P no end in sight\n";
    let mut input = line.as_bytes();
    assert!(!d.decode(&mut input, &mut b));
    assert_eq!(d.position(), 0);
    let t0 = Instant::now();
    assert!(!d.flush_idle(&mut b, t0), "too early");
    assert!(d.flush_idle(&mut b, t0 + Duration::from_millis(60)));
    let mut s = Sent::default();
    s.take(&d, &mut b);
    assert_eq!(
        s.events[0],
        json!({"stream":"stdout","time":"2026-12-05T10:00:00Z","message":"no end in sight","partial_flushed":true})
    );
    assert_eq!(d.position(), line.len() as u64);
    assert_eq!(s.received, 1);
    assert_eq!(b.stats.bytes_in, line.len() as u64);
}

#[test]
fn merged_messages_are_capped_on_a_character_boundary() {
    let settings = ContainerSettings {
        max_merged_bytes: 10,
        ..ContainerSettings::default()
    };
    let mut d = ContainerDecoder::new(framer(0), settings, "f");
    let input = concat!(
        "2026-12-05T10:00:00Z stdout P 12345678\n",
        "2026-12-05T10:00:00Z stdout P \u{e9}\u{e9}\n",
        "2026-12-05T10:00:00Z stdout F skipped\n",
        "2026-12-05T10:00:00Z stdout F next\n",
    );
    let s = run(&mut d, &[input.as_bytes()]);
    assert_eq!(s.events[0]["message"], "12345678\u{e9}");
    assert_eq!(s.events[0]["message_truncated"], true);
    assert_eq!(s.events[1]["message"], "next");
    assert_eq!(d.counts().truncated, 1);
}

#[test]
fn fill_reads_a_reader() {
    let mut d = decoder(ContainerFormat::Cri, false);
    let mut r = CRI_SAMPLE.as_bytes();
    let mut b = Batch::new();
    let mut n = 0;
    while d.fill(&mut r, &mut b).unwrap() {
        n += b.output().len();
    }
    assert_eq!(n, 6);
}

/// A message's CRI lines when the runtime cut its bytes at `cuts` (anywhere, even inside
/// a character, as a runtime does).
fn cri_split(msg: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        out.extend_from_slice(b"2026-12-05T10:00:00Z stdout P ");
        out.extend_from_slice(&msg[at..c]);
        out.push(b'\n');
        at = c;
    }
    out.extend_from_slice(b"2026-12-05T10:00:00Z stdout F ");
    out.extend_from_slice(&msg[at..]);
    out.push(b'\n');
    out
}

fn docker_split(msg: &str, cuts: &[usize]) -> String {
    let mut out = String::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.to_vec();
    ends.push(msg.len());
    for (k, &c) in ends.iter().enumerate() {
        let mut log = msg[at..c].to_string();
        if k + 1 == ends.len() {
            log.push('\n');
        }
        let rec = json!({"log": log, "stream": "stderr", "time": "2026-12-05T10:00:00Z"});
        out.push_str(&format!("{rec}\n"));
        at = c;
    }
    out
}

proptest! {
    /// Any split of a message into partial lines (of either format), read in chunks of any
    /// size, merges back to exactly that message, once.
    #[test]
    fn any_split_merges_back(
        msg in "[^\n\r]{0,300}",
        cut_seeds in proptest::collection::vec(any::<usize>(), 0..8),
        chunk in 1usize..200,
        docker in any::<bool>(),
    ) {
        // CRI cuts anywhere in the bytes; Docker's records are JSON strings, so its cuts
        // fall on character boundaries.
        let mut cuts: Vec<usize> = cut_seeds
            .iter()
            .map(|s| s % (msg.len() + 1))
            .filter(|&c| !docker || msg.is_char_boundary(c))
            .collect();
        cuts.sort_unstable();
        let text = if docker {
            docker_split(&msg, &cuts).into_bytes()
        } else {
            cri_split(msg.as_bytes(), &cuts)
        };
        let format = if docker { ContainerFormat::Docker } else { ContainerFormat::Cri };
        let mut d = decoder(format, false);
        let bytes = &text[..];
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        let s = run(&mut d, &chunks);
        prop_assert!(s.dead.is_empty(), "{:?}", s.dead);
        prop_assert_eq!(s.events.len(), 1);
        prop_assert_eq!(s.events[0]["message"].as_str().unwrap(), msg.as_str());
        prop_assert_eq!(s.origins[0], (1, 0));
        prop_assert_eq!(d.position(), bytes.len() as u64);
        prop_assert_eq!(s.received, 1);
    }
}

proptest! {
    /// Hostile input: any bytes, in any chunks, through any format, with small limits and
    /// merge_json: no panic, every event is JSON our parser accepts (checked in `take`), and
    /// every line ends as exactly one event or one dead letter (the counts balance).
    #[test]
    fn any_bytes_decode_to_valid_events_or_dead_letters(
        lines in proptest::collection::vec(
            prop_oneof![
                "[ -~\u{e9}\u{0}\u{1b}]{0,40}",
                "2026-12-05T10:00:00Z (stdout|stderr) (P|F) [ -~\u{e9}\u{1f}]{0,30}",
                "2026-12-05T10:00:00Z stdout F \\{\"[a-z]{1,3}\":[0-9]{1,3}(,\"time\":1)?\\}",
                "\\{\"log\":\"[a-z\\\\]{0,12}(\\\\n)?\",\"stream\":\"(stdout|stderr|x)\",\"time\":\"t\"\\}",
            ],
            0..24,
        ),
        chunk in 1usize..64,
        format in prop_oneof![Just(ContainerFormat::Cri), Just(ContainerFormat::Docker), Just(ContainerFormat::Auto)],
        merge_json in any::<bool>(),
        max in 1usize..40,
    ) {
        let text = lines.join("\n");
        let settings = ContainerSettings {
            format,
            merge_json,
            max_merged_bytes: max,
            ..ContainerSettings::default()
        };
        let mut d = ContainerDecoder::new(framer(0), settings, "f");
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        let s = run(&mut d, &chunks);
        prop_assert_eq!(s.received, s.events.len() as u64 + s.dead.len() as u64);
        prop_assert_eq!(s.dead_lettered, s.dead.len() as u64);
        prop_assert_eq!(d.position(), bytes.len() as u64);
        prop_assert!(s.ends.windows(2).all(|w| w[0] <= w[1]), "positions go back: {:?}", s.ends);
    }
}
