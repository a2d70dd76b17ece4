//! annql
