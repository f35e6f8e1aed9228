def test_cli_example_numbers_match_the_demo():
    # `hhld demo --example N` is checked without importing hhld.demo (fast one-line errors)
    from hhld.cli.demo import EXAMPLE_NUMBERS
    from hhld.demo import EXAMPLES

    assert tuple(sorted(EXAMPLES)) == EXAMPLE_NUMBERS
