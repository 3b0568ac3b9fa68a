"""``python -m bert4keras_ng.port script.py [-o out.py]`` (or a folder with ``-o folder``)."""

import argparse
import os
import sys

from bert4keras_ng.port.tool import format_findings, port_file, port_tree


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bert4keras_ng.port",
        description="Rewrite a bert4keras 0.11.5 script (or a folder of them) for bert4keras_ng "
                    "and Keras 3; report every change and every line to port by hand.",
    )
    parser.add_argument("path", help="a .py script or a folder")
    parser.add_argument("-o", "--output",
                        help="where to write the ported script (a folder for a folder input); "
                             "without it the ported script is printed to stdout")
    args = parser.parse_args(argv)
    if not os.path.exists(args.path):
        parser.error("no such file or folder: %s" % args.path)
    if os.path.isdir(args.path):
        if not args.output:
            parser.error("porting a folder needs -o OUTPUT_FOLDER")
        results = port_tree(args.path, args.output)
        for relative, findings in sorted(results.items()):
            print(format_findings(relative, findings), file=sys.stderr)
        manual = sum(any(f.kind == "manual" for f in fs) for fs in results.values())
        print("ported %d script(s) into %s; %d need hand changes"
              % (len(results), args.output, manual), file=sys.stderr)
        return 0
    new_source, findings = port_file(args.path, args.output)
    if not args.output:
        sys.stdout.write(new_source)
    print(format_findings(args.path, findings), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
