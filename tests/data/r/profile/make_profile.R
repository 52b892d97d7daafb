## make_profile.R -- reference profile-likelihood confidence intervals from R
## (confint() of nls fits: MASS's confint.nls = profile() of the fit, then a
## spline of the signed root statistic tau against each parameter, inverted at
## qt((1 -/+ level)/2, df)), for nlfit's test suite.
##
## Run from this folder:   Rscript make_profile.R
## Needs: R (stats, datasets), MASS, jsonlite.   Made with R 4.2.2, MASS 7.3-58.2.
## Writes: one CSV per data set used (<name>.csv) and profile.json.
##
## CSVs: full data (or the stated derived subset), R's column names, R's row
##   order, no row names, factors as their labels, numbers as sprintf("%.17g")
##   (reads back to the identical double).
## profile.json: a JSON array, one entry per case; numbers are written exactly
##   (shortest of %.15g / %.17g that round-trips), null where R gives NA.
##
## How each case is computed:
##   1. fit0 <- the nls call exactly as recorded in "call";
##   2. refined <- update(fit0, start = coef(fit0), control = nls.control(tol = T,
##      maxiter = 1000, minFactor = 1e-12)) for T = 1e-10, else 1e-8, else 1e-6
##      (the first that R reaches; "refine_tol"; "conv_tol" is the relative
##      offset R reached).  For formulas without a selfStart model R uses a
##      forward-difference Jacobian, so the attainable relative offset floors
##      near 1e-8 and tol 1e-10 is usually not reached.
##   3. fit <- update(fit0, start = coef(refined)): R's DEFAULT control again
##      (0 iterations: it starts converged), so the parameters are the refined
##      ones but profile() -- which reuses the fit's stored control for every
##      profile fit -- runs with R's defaults (tol 1e-5, maxiter 50, minFactor
##      1/1024), i.e. what a user calling confint() on the ordinary fit gets.
##      Profiling with the tight control instead makes several profiles fail
##      ("number of iterations exceeded maximum of 1000").
##   4. confint(fit) (level 0.95) and confint(fit, level = 0.90).
##   Because every profile fit stops at tol 1e-5, R's profile limits are only
##   good to roughly 1e-6 relative (they move by ~1e-6 between the unrefined
##   and the refined fit): compare them with rtol ~1e-4, not 1e-10.
##
## Entry fields: id, call, data (CSV), data_expr (R expression of the data the
##   call sees), subset (null or {column, value}: rows of the CSV with
##   column == value), x, y, formula (right side, explicit expression in the CSV
##   column names), params, stderr, rss, n, df_residual, sigma, refine_tol,
##   conv_tol, level, confint {name: [lower, upper]}, warnings (warnings R gave
##   during confint), wald {name: [est -/+ qt(0.975, df) * se]}, confint_90,
##   warnings_90, wald_90, open_sides {name: ["lower"/"upper"]} (sides where R
##   gives NA at 0.95), spline_monotone {name: bool} (whether the interpolating
##   spline R's confint inverts is monotone; false flags R values that are
##   spline artefacts), confint_exact / confint_exact_90 (exact roots of the
##   profile statistic, see exact_limits(); null = no root found), profile
##   {name: {tau: [...], par_vals: {param: [...]}}} (R's profile(fit,
##   alphamax = 0.0125), the one confint uses at 0.95), error (null, or R's
##   error message when confint() itself fails; then confint* are null).
##   R's confint inverts a spline through a coarse profile (step cutoff/5 in
##   tau), so it differs from the exact root by up to ~1e-2 relative (BOD's A
##   upper: 38.483 vs 38.456); compare an exact implementation with
##   confint_exact, and R's algorithm with confint.

suppressPackageStartupMessages({
  library(stats)
  library(MASS)
  library(jsonlite)
})
options(warn = 1)

## ---------------------------------------------------------------- helpers --

num17 <- function(x) {
  s <- sprintf("%.17g", x)
  s[is.na(x)] <- "NA"
  s
}

num_str <- function(x) {
  s <- sprintf("%.15g", x)
  bad <- !is.na(x) & as.numeric(s) != x
  s[bad] <- sprintf("%.17g", x[bad])
  s
}

write_data <- function(df, file) {
  out <- as.data.frame(lapply(df, function(col) {
    if (is.factor(col)) as.character(col)
    else if (is.numeric(col)) num17(col)
    else as.character(col)
  }), stringsAsFactors = FALSE, check.names = FALSE)
  write.csv(out, file, row.names = FALSE, quote = TRUE)
}

## exact double in JSON (json_verbatim); NA / non-finite -> null
jnum <- function(x) {
  x <- as.numeric(x)
  if (length(x) != 1) stop("jnum: scalar expected")
  if (is.na(x) || !is.finite(x)) return(NULL)
  structure(num_str(x), class = "json")
}
jnull <- structure("null", class = "json")
jnum0 <- function(x) { v <- jnum(x); if (is.null(v)) jnull else v }
jnum_named <- function(v) {
  l <- lapply(unname(v), jnum0)
  names(l) <- names(v)
  l
}
jpair <- function(m) {          # matrix (param x 2) -> {name: [lo, hi]}
  l <- lapply(seq_len(nrow(m)), function(i) list(jnum0(m[i, 1]), jnum0(m[i, 2])))
  names(l) <- rownames(m)
  l
}

plain <- function(d) {
  d <- as.data.frame(d)            # drop groupedData classes
  attr(d, "formula") <- NULL
  rownames(d) <- NULL
  d
}

## ------------------------------------------------------------- data sets --

DATA <- list(
  wtloss      = plain(MASS::wtloss),
  DNase       = transform(plain(DNase), log_conc = log(conc)),
  BOD         = plain(BOD),
  Puromycin   = plain(Puromycin),
  Loblolly    = plain(Loblolly),
  ChickWeight = plain(ChickWeight)
)
## derived subsets (two conditions) for the open-sided cases
DATA$DNase_run1_conc_le_0.4 <- local({
  d <- subset(DATA$DNase, Run == 1 & conc <= 0.4); rownames(d) <- NULL; d })
DATA$Orange_tree1_first6 <- local({
  d <- plain(Orange)
  d <- d[d$Tree == "1", ][1:6, ]; rownames(d) <- NULL; d })
DATA$wtloss_days_le_60 <- local({
  d <- subset(DATA$wtloss, Days <= 60); rownames(d) <- NULL; d })

for (nm in names(DATA)) write_data(DATA[[nm]], paste0(nm, ".csv"))
## the calls below see these plain data frames under R's names
for (nm in c("wtloss", "DNase", "BOD", "Puromycin", "Loblolly", "ChickWeight"))
  assign(nm, DATA[[nm]])
Orange <- plain(Orange)

## ----------------------------------------------------------------- cases --

F_LOGIS  <- function(x) sprintf("Asym/(1+exp((xmid-%s)/scal))", x)
F_MICMEN <- function(x) sprintf("Vm*%s/(K+%s)", x, x)
F_ASYMP  <- function(x) sprintf("Asym+(R0-Asym)*exp(-exp(lrc)*%s)", x)

cases <- list(
  list(id = "wtloss_mass",
       call = "nls(Weight ~ b0 + b1*2^(-Days/th), data = wtloss, start = c(b0 = 90, b1 = 95, th = 120))",
       data = "wtloss", data_expr = "wtloss", subset = NULL,
       x = "Days", y = "Weight", formula = "b0 + b1*2^(-Days/th)"),
  list(id = "dnase1_sslogis",
       call = "nls(density ~ SSlogis(log(conc), Asym, xmid, scal), data = subset(DNase, Run == 1))",
       data = "DNase", data_expr = "subset(DNase, Run == 1)",
       subset = list(column = "Run", value = "1"),
       x = "log_conc", y = "density", formula = F_LOGIS("log_conc")),
  list(id = "bod_lrc",
       call = "nls(demand ~ A*(1-exp(-exp(lrc)*Time)), data = BOD, start = c(A = 20, lrc = log(0.35)))",
       data = "BOD", data_expr = "BOD", subset = NULL,
       x = "Time", y = "demand", formula = "A*(1-exp(-exp(lrc)*Time))"),
  ## open sides, clean: asymptotic regression through the origin on the first
  ## six ages of Orange tree 1.  As Asym -> Inf (lrc -> -Inf) the model tends
  ## to a line through 0 whose tau is 2.59 < qt(0.975, 4) = 2.78, so the
  ## Asym upper and lrc lower limits truly do not exist at 0.95 (they do at 0.90)
  list(id = "orange1_first6_ssasymporig_open",
       call = "nls(circumference ~ SSasympOrig(age, Asym, lrc), data = subset(Orange, Tree == \"1\")[1:6, ])",
       data = "Orange_tree1_first6",
       data_expr = "subset(Orange, Tree == \"1\")[1:6, ]", subset = NULL,
       x = "age", y = "circumference", formula = "Asym*(1-exp(-exp(lrc)*age))"),
  ## open side in R only: asymptotic regression on the first 60 days of
  ## wtloss.  R gives NA for the Asym lower limit because its profile stops
  ## (next step beyond 10*cutoff standard errors) at tau = -2.196 > -2.262;
  ## the profile does cross -qt(0.975, 9) further out (Asym ~ -494.4; tau ->
  ## -2.578 as Asym -> -Inf), see confint_exact
  list(id = "wtloss_days60_ssasymp_open",
       call = "nls(Weight ~ SSasymp(Days, Asym, R0, lrc), data = subset(wtloss, Days <= 60))",
       data = "wtloss_days_le_60", data_expr = "subset(wtloss, Days <= 60)",
       subset = NULL,
       x = "Days", y = "Weight", formula = F_ASYMP("Days")),
  ## open side with a spline artifact: Michaelis-Menten on the low (nearly
  ## linear) concentrations.  Vm upper and K upper are both truly unbounded
  ## (tau -> 1.24 < 2.78 as Vm, K -> Inf); R gives NA for Vm upper but a
  ## FINITE K upper (24.6) and a too-narrow Vm / K lower, because the
  ## interpolating spline through the 7 profile points overshoots (is not
  ## monotone; spline_monotone = false)
  list(id = "dnase1_low_ssmicmen_open_spline_artifact",
       call = "nls(density ~ SSmicmen(conc, Vm, K), data = subset(DNase, Run == 1 & conc <= 0.4))",
       data = "DNase_run1_conc_le_0.4",
       data_expr = "subset(DNase, Run == 1 & conc <= 0.4)", subset = NULL,
       x = "conc", y = "density", formula = F_MICMEN("conc")),
  list(id = "puromycin_treated_ssmicmen",
       call = "nls(rate ~ SSmicmen(conc, Vm, K), data = subset(Puromycin, state == \"treated\"))",
       data = "Puromycin", data_expr = "subset(Puromycin, state == \"treated\")",
       subset = list(column = "state", value = "treated"),
       x = "conc", y = "rate", formula = F_MICMEN("conc")),
  list(id = "loblolly301_ssasymp",
       call = "nls(height ~ SSasymp(age, Asym, R0, lrc), data = subset(Loblolly, Seed == \"301\"))",
       data = "Loblolly", data_expr = "subset(Loblolly, Seed == \"301\")",
       subset = list(column = "Seed", value = "301"),
       x = "age", y = "height", formula = F_ASYMP("age")),
  list(id = "chick2_sslogis",
       call = "nls(weight ~ SSlogis(Time, Asym, xmid, scal), data = subset(ChickWeight, Chick == \"2\"))",
       data = "ChickWeight", data_expr = "subset(ChickWeight, Chick == \"2\")",
       subset = list(column = "Chick", value = "2"),
       x = "Time", y = "weight", formula = F_LOGIS("Time")),
  ## R's confint() FAILS here (a profile fit stops with an error): error case
  list(id = "chick1_sslogis_confint_error",
       call = "nls(weight ~ SSlogis(Time, Asym, xmid, scal), data = subset(ChickWeight, Chick == \"1\"))",
       data = "ChickWeight", data_expr = "subset(ChickWeight, Chick == \"1\")",
       subset = list(column = "Chick", value = "1"),
       x = "Time", y = "weight", formula = F_LOGIS("Time"))
)

## ------------------------------------------------------------- machinery --

refine <- function(fit0) {
  for (tol in c(1e-10, 1e-8, 1e-6)) {
    r <- tryCatch(update(fit0, start = coef(fit0),
                         control = nls.control(tol = tol, maxiter = 1000,
                                               minFactor = 1e-12)),
                  error = function(e) NULL)
    if (!is.null(r)) return(list(fit = r, tol = tol))
  }
  list(fit = fit0, tol = NA)
}

## confint with warnings collected and the "Waiting for profiling" message muted
ci_run <- function(fit, level) {
  w <- character()
  ci <- tryCatch(
    withCallingHandlers(suppressMessages(confint(fit, level = level)),
                        warning = function(x) {
                          w <<- c(w, conditionMessage(x))
                          invokeRestart("muffleWarning")
                        }),
    error = function(e) structure(conditionMessage(e), class = "ci_error"))
  list(ci = ci, warnings = unique(w))
}

as_ci_matrix <- function(ci, pnames) {
  m <- as.matrix(ci)
  if (ncol(m) == 1) m <- t(m)          # single parameter -> drop() gave a vector
  rownames(m) <- pnames
  m
}

wald <- function(fit, level) {
  s <- summary(fit)$coefficients
  q <- qt(1 - (1 - level) / 2, df.residual(fit))
  m <- cbind(s[, "Estimate"] - q * s[, "Std. Error"],
             s[, "Estimate"] + q * s[, "Std. Error"])
  rownames(m) <- rownames(s)
  m
}

## R's profile at a level (the one confint uses): traces and spline checks
profile_info <- function(fit, level) {
  pr <- tryCatch(suppressWarnings(profile(fit, alphamax = (1 - level) / 4)),
                 error = function(e) NULL)
  if (is.null(pr)) return(NULL)
  trace <- lapply(names(pr), function(p) {
    pv <- pr[[p]]$par.vals
    pvl <- lapply(colnames(pv), function(q) lapply(pv[, q], jnum0))
    names(pvl) <- colnames(pv)
    list(tau = lapply(pr[[p]]$tau, jnum0), par_vals = pvl)
  })
  names(trace) <- names(pr)
  mono <- vapply(names(pr), function(p) {
    sp <- spline(pr[[p]]$par.vals[, p], pr[[p]]$tau)
    all(diff(sp$y) > 0)
  }, TRUE)
  list(pr = pr, trace = trace, mono = as.list(mono))
}

## Exact profile limits: the roots of tau(theta_j) = -/+ qt(1 - (1-level)/2, df),
## tau(theta_j) = sign(theta_j - est) * sqrt((S(theta_j) - S_hat) / s^2), each
## conditional fit S(theta_j) by R's own profiler with a tight control
## (tol 1e-9, maxiter 1000, minFactor 1e-12, warnOnly), root by uniroot
## (tol 1e-12 * max(1, |est|)).  Bracketed by R's profile points; where R's
## profile never reaches the target the search continues outward from R's last
## point, doubling the distance from est (up to 2^20 times R's last distance)
## and gives up (null) when tau changes by < 1e-3 per doubling (levelled off),
## jumps (> 4x its last change: floating-point breakdown far out), a
## conditional fit fails, or the bound is reached.  Independent of R's
## profile step and spline.
exact_limits <- function(fit, pr, level) {
  ctl <- nls.control(tol = 1e-9, maxiter = 1000, minFactor = 1e-12,
                     warnOnly = TRUE)
  ft <- suppressWarnings(update(fit, start = coef(fit), control = ctl))
  ft$m$setPars(coef(fit))
  prof <- stats:::profiler(ft)
  est <- coef(fit)
  q <- qt(1 - (1 - level) / 2, df.residual(fit))
  taufun <- function(j, v, start) {
    st <- start; st[j] <- v
    prof$setDefault(varying = j, params = st)
    a <- tryCatch(suppressWarnings(prof$getProfile()), error = function(e) NULL)
    prof$setDefault()
    if (is.null(a) || is.na(a$fstat)) return(NULL)
    list(tau = sign(v - est[j]) * sqrt(max(0, a$fstat)),
         pars = a$parameters[seq_along(est)])
  }
  m <- t(vapply(names(est), function(p) {
    j <- match(p, names(est))
    pv <- pr[[p]]$par.vals; tau <- pr[[p]]$tau
    vapply(c(-q, q), function(target) {
      i <- which(head(tau, -1) <= target & tail(tau, -1) >= target)
      if (length(i)) {
        i <- if (target < 0) min(i) else max(i)
        lo <- pv[i, j]; hi <- pv[i + 1, j]
        start <- pv[if (target < 0) i + 1 else i, ]
      } else {                        # march outward from R's last point
        k <- if (target < 0) 1 else nrow(pv)
        d0 <- pv[k, j] - est[j]
        if (d0 == 0) return(NA_real_)
        prev <- pv[k, ]; prev_tau <- tau[k]; prev_dt <- NA; found <- FALSE
        for (step in 1:20) {
          v <- est[j] + d0 * 2^step
          r <- taufun(j, v, prev)
          if (is.null(r)) return(NA_real_)
          dt <- abs(r$tau - prev_tau)
          ## a jump (> 4x the last change while doubling) is numerical breakdown
          ## of the model far out (e.g. 1 - exp(-tiny)), not a crossing
          if (!is.na(prev_dt) && dt > 4 * prev_dt) return(NA_real_)
          if ((target < 0 && r$tau <= target) || (target > 0 && r$tau >= target)) {
            lo <- prev[j]; hi <- v; start <- prev; found <- TRUE; break
          }
          if (dt < 1e-3) break          # tau has levelled off below the target
          prev <- r$pars; prev_tau <- r$tau; prev_dt <- dt
        }
        if (!found) return(NA_real_)
      }
      f <- function(v) { r <- taufun(j, v, start); if (is.null(r)) NA_real_ else r$tau - target }
      r <- tryCatch(uniroot(f, sort(c(lo, hi)),
                            tol = 1e-12 * max(1, abs(est[j])))$root,
                    error = function(e) NA_real_)
      r
    }, 0)
  }, c(0, 0)))
  rownames(m) <- names(est)
  m
}

run_case <- function(cs) {
  cat("==", cs$id, "\n")
  fit0 <- eval(parse(text = cs$call)[[1]], envir = globalenv())
  rf <- refine(fit0)
  st <- coef(rf$fit)
  fit <- update(fit0, start = st)
  stopifnot(identical(coef(fit), st), fit$convInfo$finIter == 0)
  s <- summary(fit)
  pn <- names(st)

  c95 <- ci_run(fit, 0.95)
  c90 <- ci_run(fit, 0.90)
  err <- NULL
  if (inherits(c95$ci, "ci_error") || inherits(c90$ci, "ci_error")) {
    err <- if (inherits(c95$ci, "ci_error")) unclass(c95$ci) else unclass(c90$ci)
    cat("   confint error:", err, "\n")
  }
  m95 <- if (inherits(c95$ci, "ci_error")) NULL else as_ci_matrix(c95$ci, pn)
  m90 <- if (inherits(c90$ci, "ci_error")) NULL else as_ci_matrix(c90$ci, pn)
  if (!is.null(m95)) print(signif(m95, 6))

  pi95 <- profile_info(fit, 0.95)
  pi90 <- profile_info(fit, 0.90)
  open <- NULL
  if (!is.null(m95)) {
    open <- lapply(pn, function(p) I(c("lower", "upper")[is.na(m95[p, ])]))
    names(open) <- pn
    open <- open[vapply(open, length, 0L) > 0]
    if (length(open) == 0) open <- NULL
  }

  list(
    id = cs$id, call = cs$call, data = paste0(cs$data, ".csv"),
    data_expr = cs$data_expr,
    subset = if (is.null(cs$subset)) jnull else cs$subset,
    x = I(cs$x), y = cs$y, formula = cs$formula,
    params = jnum_named(st),
    stderr = jnum_named(s$coefficients[pn, "Std. Error"]),
    rss = jnum0(deviance(fit)), n = nobs(fit),
    df_residual = df.residual(fit), sigma = jnum0(s$sigma),
    refine_tol = jnum0(rf$tol), conv_tol = jnum0(rf$fit$convInfo$finTol),
    level = 0.95,
    confint = if (is.null(m95)) jnull else jpair(m95),
    warnings = I(c95$warnings),
    wald = jpair(wald(fit, 0.95)),
    confint_90 = if (is.null(m90)) jnull else jpair(m90),
    warnings_90 = I(c90$warnings),
    wald_90 = jpair(wald(fit, 0.90)),
    spline_monotone = if (is.null(pi95)) jnull else pi95$mono,
    confint_exact = if (is.null(pi95)) jnull else jpair(exact_limits(fit, pi95$pr, 0.95)),
    confint_exact_90 = if (is.null(pi90)) jnull else jpair(exact_limits(fit, pi90$pr, 0.90)),
    profile = if (is.null(pi95)) jnull else pi95$trace,
    open_sides = if (is.null(open)) jnull else open,
    error = if (is.null(err)) jnull else err
  )
}

out <- lapply(cases, run_case)

writeLines(toJSON(out, auto_unbox = TRUE, pretty = TRUE, null = "null",
                  na = "null", digits = NA, json_verbatim = TRUE),
           "profile.json")
cat("wrote profile.json with", length(out), "entries\n")
