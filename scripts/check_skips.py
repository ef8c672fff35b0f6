"""Fails `make test` when a test was skipped that is not allowed to be, by name, in
Tests/allowed-skips.txt — a skip on CI is a test that did not run, however it was reported.

Usage: check_skips.py SWIFT_TEST_LOG PYTEST_JUNIT_XML
The Swift log is `swift test`'s output (XCTest prints "Test Case 'Suite.test' skipped"); the
pytest report is --junitxml's (a <skipped> element inside each skipped <testcase>)."""
import os
import re
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def allowed():
    names = {}
    for line in open(os.path.join(ROOT, "Tests", "allowed-skips.txt"), encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition("  ")
            names[name.strip()] = reason.strip()
    return names


def swift_skips(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    names = re.findall(r"Test Case '([^']+)' skipped", text)
    summary = sum(int(n) for n in re.findall(r"with (\d+) tests? skipped", text.split("Test Suite 'All tests'")[-1]))
    if summary and not names:
        names.append(f"(XCTest counted {summary} skipped test(s) it did not name)")
    if "Executed" not in text:
        sys.exit(f"check_skips: {path} holds no XCTest summary: did the Swift tests run?")
    return names


def pytest_skips(path):
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            module = case.get("classname", "").split(".")[-1]
            out.append((f"{module}.py::{case.get('name')}", skipped.get("message", "")))
    return out


def main():
    ok = allowed()
    bad = [(n, "") for n in swift_skips(sys.argv[1]) if n not in ok]
    bad += [(n, m) for n, m in pytest_skips(sys.argv[2]) if n not in ok]
    if bad:
        for n, m in bad:
            print(f"check_skips: skipped, and not in Tests/allowed-skips.txt: {n}" + (f" ({m})" if m else ""), file=sys.stderr)
        sys.exit(1)
    print(f"check_skips: no test skipped beyond the {len(ok)} allowed by name")


if __name__ == "__main__":
    main()
