"""Native tests of the examples: `python3 -m unittest discover -s tests` in guest-sdk/python."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "examples")]

import drop_debug  # noqa: E402
import field_paths  # noqa: E402
import tag_service  # noqa: E402
from sluicebox import run  # noqa: E402


class Examples(unittest.TestCase):
    def test_drop_debug(self):
        out = run(drop_debug, ['{"level":"DEBUG"}', '{"level":"DEBU\\u0047"}', '{"level":"INFO"}', "{}", '{"level":["DEBUG"]}'])
        self.assertEqual([v for v, _ in out], ["drop", "drop", "keep", "keep", "keep"])

    def test_tag_service(self):
        a, b = run(tag_service, ['{"msg":"hi","n":1}', '{"n":1}'])
        self.assertEqual(a, ("edit", [("set", "env", '"prod"'), ("rename", "msg", "message")]))
        self.assertEqual(b, ("edit", [("set", "env", '"prod"')]))

    def test_field_paths(self):
        [(v, edits)] = run(field_paths, ['{"":{"":1},"a":{"":{"b":2}},"sp ace":9}'])
        self.assertEqual(edits[0], ("set", "k", '"DDMOMMMMDM"'))


if __name__ == "__main__":
    unittest.main()
