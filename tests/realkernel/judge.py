"""Judge a real-kernel run from the guest's JUnit XML: every phase ran, nothing failed, erred
or was skipped (in the guest every resource the tests ask for exists, so a skip is a bug).

    /usr/bin/python3 tests/realkernel/judge.py RUN_OUT_DIR
"""

import pathlib
import sys
import xml.etree.ElementTree as ET

PHASES = ("without-esp", "esp")


def counts(xml_text):
    """(tests, failures, errors, skipped, [skip reasons]) of one JUnit report."""
    root = ET.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else list(root)
    total = [sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")]
    reasons = [f"{case.get('classname')}::{case.get('name')}: {skip.get('message')}"
               for case in root.iter("testcase") for skip in case.iter("skipped")]
    return (*total, reasons)


def durations(xml_text):
    """[(seconds, test name)] of one JUnit report, slowest first."""
    cases = ET.fromstring(xml_text).iter("testcase")
    return sorted(((float(c.get("time", 0)), c.get("name")) for c in cases), reverse=True)


def verdict(out):
    """Lines to print and whether the run passed."""
    lines, ok = [], True
    for phase in PHASES:
        report = out / f"{phase}.xml"
        if not report.exists():
            lines.append(f"phase {phase}: no report (the guest did not get there)")
            ok = False
            continue
        tests, failures, errors, skipped, reasons = counts(report.read_text())
        passed = tests - failures - errors - skipped
        lines.append(f"phase {phase}: {passed} passed, {failures} failed, {errors} errors, "
                     f"{skipped} skipped")
        lines += [f"  skipped: {r}" for r in reasons]
        lines += [f"  {seconds:6.1f} s  {name}" for seconds, name in durations(report.read_text())]
        ok = ok and tests > 0 and failures == errors == skipped == 0
    return lines, ok


def main(argv):
    lines, ok = verdict(pathlib.Path(argv[1]))
    print("\n".join(lines + [f"realkernel: {'PASS' if ok else 'FAIL'}"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
