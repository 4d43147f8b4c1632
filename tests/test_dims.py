"""The one resolver of embedding dimensions (transforms/dims.py)."""

from transforms import dims

RECORDED = {"user": 31, "movie": 27, "genres": 3, "age_bucket": 2}


def test_spec_dimension_is_the_explicit_value_or_the_fourth_root():
  assert dims.spec_dimension(None, 1_000_001) == 32
  assert dims.spec_dimension(None, 500_001) == 27
  assert dims.spec_dimension(12, 500_001) == 12


def test_untied_tables_take_their_override_or_recorded_dimension():
  assert dims.table_dimensions(RECORDED, ["genres", "age_bucket"],
                               overrides={"genres": 5}) == {
                                   "genres": 5, "age_bucket": 2}


def test_tied_tables_share_the_largest_basis_dimension():
  resolved = dims.table_dimensions(
      RECORDED, ["user", "movie", "genres", "age_bucket"],
      tied=("user", "movie", "genres"), tied_basis=("user", "movie"))
  assert resolved == {"user": 31, "movie": 31, "genres": 31, "age_bucket": 2}
  # Overrides of the basis count; an explicit shared dimension wins.
  assert dims.table_dimensions(
      RECORDED, ["user", "movie"], overrides={"movie": 40},
      tied=("user", "movie"), tied_basis=("user", "movie")) == {
          "user": 40, "movie": 40}
  assert dims.table_dimensions(
      RECORDED, ["user", "movie", "genres"], overrides={"movie": 40},
      tied=("user", "movie", "genres"), tied_basis=("user", "movie"),
      tied_dim=16) == {"user": 16, "movie": 16, "genres": 16}
