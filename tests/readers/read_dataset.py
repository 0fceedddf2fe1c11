"""Reads a dynsync dataset with readers nobody at dynsync wrote, and prints what they see as JSON.

    read_dataset.py duckdb <sql>
        runs <sql> in DuckDB (e.g. over read_parquet('<folder>/gen-1/*.parquet', union_by_name=true))
    read_dataset.py azure-container <host:port> <container>
        creates a container in Azurite (pyarrow's Azure file system), so that dynsync can write into it
    read_dataset.py pyarrow-azure <host:port> <container> <folder>
        reads every Parquet file under <folder> of an Azurite container with pyarrow, schemas unified by name

The output is {"columns": [{"name", "type"}], "rows": [[value as text or null, ...]]}: values are printed with
Python's str() of what the reader returns (Decimal, datetime, date, UUID, ...), so the test sees the reader's types.
"""
import json
import sys

# Azurite's well-known development account.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def text(value):
    return None if value is None else str(value)


def azurite(authority):
    import pyarrow.fs

    return pyarrow.fs.AzureFileSystem(
        account_name=ACCOUNT,
        account_key=KEY,
        blob_storage_authority=authority,
        blob_storage_scheme="http",
        dfs_storage_authority=authority,
        dfs_storage_scheme="http",
    )


def main(argv):
    command = argv[1]
    if command == "duckdb":
        import duckdb

        connection = duckdb.connect()
        connection.execute("SET TimeZone = 'UTC'")
        result = connection.sql(argv[2])
        columns = [{"name": n, "type": str(t)} for n, t in zip(result.columns, result.types)]
        rows = [[text(v) for v in row] for row in result.fetchall()]
    elif command == "azure-container":
        azurite(argv[2]).create_dir(argv[3])
        columns, rows = [], []
    elif command == "pyarrow-azure":
        import pyarrow
        import pyarrow.dataset
        import pyarrow.fs
        import pyarrow.parquet

        filesystem = azurite(argv[2])
        selector = pyarrow.fs.FileSelector(f"{argv[3]}/{argv[4]}", recursive=True)
        files = sorted(i.path for i in filesystem.get_file_info(selector) if i.path.endswith(".parquet"))
        schema = pyarrow.unify_schemas([pyarrow.parquet.read_schema(f, filesystem=filesystem) for f in files])
        table = pyarrow.dataset.dataset(files, schema=schema, filesystem=filesystem, format="parquet").to_table()
        columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
        rows = [[text(row[c["name"]]) for c in columns] for row in table.to_pylist()]
    else:
        raise SystemExit(f"unknown command {command}: use duckdb, azure-container or pyarrow-azure")
    json.dump({"columns": columns, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
