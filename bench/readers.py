"""Each built-in reader against the plainest read of the same file with the library underneath.

- csv: ``read_csv`` vs ``csv.reader`` + ``dict(zip(header, map(convert_field, row)))`` (the same
  records, no options, no checks); pyarrow.csv's multi-threaded C++ read is in the context.
- csv.gz: the same through gzip (``gzip.open`` under the baseline).
- json: ``read_json`` vs ``json.load`` of the whole file, on a file read_json parses whole (up to
  16M characters) and on one it streams element by element.
- xlsx: ``read_xlsx`` vs calamine's ``iter_rows`` zipped with the header.
- parquet: ``read_parquet`` vs ``pyarrow.parquet.read_table(...).to_pylist()``.

Ratio = our time / baseline time (lower is better), medians of interleaved runs.
"""

from __future__ import annotations

import csv
import gzip
import json
import os

from bench import Row, at_most, interleaved, scratch

NAME = "readers"
TITLE = "each reader vs the plain library read of the same file"
ROWS = 200_000
SMOKE_ROWS = 2_000
XLSX_ROWS = 50_000
SMOKE_XLSX_ROWS = 500
REPEATS, SMOKE_REPEATS = 5, 1


def _rows(count: int):
    for i in range(count):
        yield [i, f"item {i}", round(i * 1.25, 2), "2026-12-01", "north" if i % 2 else "south"]


HEADER = ["id", "name", "price", "day", "region"]


def _plain_json(path: str):
    def read():
        with open(path) as handle:
            return sum(1 for _ in json.load(handle))
    return read


def run(smoke: bool) -> list[Row]:
    from core4_pipelines.ingest.readers import convert_field, read_csv, read_json, read_parquet, read_xlsx

    rows, xlsx_rows = (SMOKE_ROWS, SMOKE_XLSX_ROWS) if smoke else (ROWS, XLSX_ROWS)
    repeats = SMOKE_REPEATS if smoke else REPEATS
    results = []
    with scratch(NAME) as root:
        path = os.path.join(root, "f.csv")
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(HEADER)
            writer.writerows(_rows(rows))
        with open(path, "rb") as raw, gzip.open(path + ".gz", "wb", compresslevel=6) as packed:
            packed.write(raw.read())

        def plain_csv(opener):
            def read():
                with opener() as handle:
                    reader = csv.reader(handle)
                    header = next(reader)
                    return sum(1 for row in reader if dict(zip(header, map(convert_field, row))))
            return read

        def ours(read, target, **options):
            return lambda: sum(1 for _ in read(target, **options))

        import pyarrow.csv as pacsv

        context = {"rows": rows}
        ours_t, base_t = interleaved(ours(read_csv, path), plain_csv(lambda: open(path, newline="")), repeats)
        arrow_t, _ = interleaved(lambda: pacsv.read_csv(path).to_pylist(), lambda: None, repeats, warmup=False)
        results.append(Row("csv", ours_t, base_t, at_most(1.3),
                           context={**context, "pyarrow_csv_to_pylist_s": sorted(arrow_t)[len(arrow_t) // 2]}))
        ours_t, base_t = interleaved(ours(read_csv, path + ".gz"),
                                     plain_csv(lambda: gzip.open(path + ".gz", "rt", newline="")), repeats)
        results.append(Row("csv.gz", ours_t, base_t, at_most(1.3), context=context))

        # Half the rows fit read_json's whole-file size (parsed at once); all of them do not (streamed).
        for case, count in (("json", rows // 2), ("json streamed (> 16M chars)", rows)):
            jpath = os.path.join(root, f"f{count}.json")
            with open(jpath, "w") as out:
                json.dump([dict(zip(HEADER, r)) for r in _rows(count)], out)
            ours_t, base_t = interleaved(ours(read_json, jpath), _plain_json(jpath), repeats)
            results.append(Row(case, ours_t, base_t, at_most(1.3), context={"rows": count}))

        import pyarrow as pa
        import pyarrow.parquet as pq

        ppath = os.path.join(root, "f.parquet")
        pq.write_table(pa.Table.from_pylist([dict(zip(HEADER, r)) for r in _rows(rows)]), ppath)
        ours_t, base_t = interleaved(ours(read_parquet, ppath), lambda: len(pq.read_table(ppath).to_pylist()), repeats)
        results.append(Row("parquet", ours_t, base_t, at_most(1.3), context=context))

        import openpyxl
        from python_calamine import CalamineWorkbook

        xpath = os.path.join(root, "f.xlsx")
        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet("data")
        sheet.append(HEADER)
        for row in _rows(xlsx_rows):
            sheet.append(row)
        book.save(xpath)

        def plain_xlsx():
            sheet_rows = iter(CalamineWorkbook.from_path(xpath).get_sheet_by_index(0).iter_rows())
            header = next(sheet_rows)
            return sum(1 for row in sheet_rows if dict(zip(header, row)))
        ours_t, base_t = interleaved(ours(read_xlsx, xpath), plain_xlsx, repeats)
        results.append(Row("xlsx", ours_t, base_t, at_most(1.3), context={"rows": xlsx_rows}))
    return results
