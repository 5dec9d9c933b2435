# Reference outputs of R limma for tests/pp/test_limma.py.
#
# Run from the repository root:
#   Rscript tests/data/limma/make_limma_fixtures.R
# Reads NAME_expr.csv / NAME_labels.csv (written by make_limma_inputs.py) and writes
#   NAME_r_ova.csv    one-vs-all: per cluster, design ~ is_c, topTable(coef = 2)
#   NAME_r_ava.csv    all-vs-all: design ~ 0 + cluster, contrasts c1 - c2 (c1 < c2)
#   NAME_r_priors.csv df.prior and s2.prior of every eBayes fit
#   misc_r.csv        trigammaInverse and p.adjust(method = "BH") on hand-made vectors
suppressPackageStartupMessages(library(limma))

dir <- "tests/data/limma"
fixtures <- c("a_balanced", "b_zero_var", "c_unbalanced", "d_equal_var",
              "e_homoscedastic", "f_min_df")

fmt <- function(x) sprintf("%.17g", x)

write_table <- function(df, path) {
  for (col in names(df)) if (is.double(df[[col]])) df[[col]] <- fmt(df[[col]])
  write.csv(df, path, row.names = FALSE, quote = FALSE)
}

for (name in fixtures) {
  expr <- as.matrix(read.csv(file.path(dir, paste0(name, "_expr.csv")),
                             row.names = 1, check.names = FALSE))
  labels <- read.csv(file.path(dir, paste0(name, "_labels.csv")))$label
  clusters <- sort(unique(labels))
  ova <- list()
  priors <- list()
  for (c in clusters) {
    is_c <- as.numeric(labels == c)
    design <- model.matrix(~is_c)
    fit <- eBayes(lmFit(expr, design))
    tt <- topTable(fit, coef = 2, number = Inf, sort.by = "none")
    ova[[length(ova) + 1]] <- data.frame(
      cluster = c, gene = rownames(tt), logFC = tt$logFC, t = tt$t,
      P.Value = tt$P.Value, adj.P.Val = tt$adj.P.Val)
    priors[[length(priors) + 1]] <- data.frame(
      fit = paste0("ova_", c), df.prior = fit$df.prior, s2.prior = fit$s2.prior)
  }
  write_table(do.call(rbind, ova), file.path(dir, paste0(name, "_r_ova.csv")))

  cluster <- factor(paste0("c", labels), levels = paste0("c", clusters))
  design <- model.matrix(~0 + cluster)
  colnames(design) <- levels(cluster)
  pairs <- combn(clusters, 2)
  contrast_names <- paste0("c", pairs[1, ], "-c", pairs[2, ])
  cm <- makeContrasts(contrasts = contrast_names, levels = design)
  fit2 <- eBayes(contrasts.fit(lmFit(expr, design), cm))
  ava <- list()
  for (k in seq_along(contrast_names)) {
    tt <- topTable(fit2, coef = k, number = Inf, sort.by = "none")
    ava[[k]] <- data.frame(
      group1 = pairs[1, k], group2 = pairs[2, k], gene = rownames(tt), logFC = tt$logFC,
      t = tt$t, P.Value = tt$P.Value, adj.P.Val = tt$adj.P.Val)
  }
  write_table(do.call(rbind, ava), file.path(dir, paste0(name, "_r_ava.csv")))
  priors[[length(priors) + 1]] <- data.frame(
    fit = "ava", df.prior = fit2$df.prior, s2.prior = fit2$s2.prior)
  write_table(do.call(rbind, priors), file.path(dir, paste0(name, "_r_priors.csv")))
}

# trigammaInverse over all its branches (x < 1e-6, Newton, x > 1e7)
x_tri <- c(1e-8, 5e-7, 1e-3, 0.05, 0.3, 1, 2.5, 10, 1e3, 1e6, 5e7)
y_tri <- trigammaInverse(x_tri)
# p.adjust BH with ties and NAs (NAs are not counted)
p_bh <- c(0.01, 0.04, NA, 0.04, 0.2, 0.5, NA, 0.001, 0.9, 0.03)
q_bh <- p.adjust(p_bh, method = "BH")
# fitFDist with non-finite / negative values left out and more than half of the values zero
# (median 0 -> 1), and with a vector of df1 (one zero df1 left out)
v_f <- c(0, 0, 0, 0, 0.5, 1.2, NA, -1, Inf, 0.3, 2.5)
f1 <- suppressWarnings(fitFDist(v_f, df1 = 3))
df_f <- c(3, 3, 4, 4, 5, 5, 2, 2, 6, 0, 3)
v_g <- c(0.1, 0.7, 0.2, 1.5, 0.05, 0.3, 0.9, 0, 0.4, 0.6, 2.2)
f2 <- suppressWarnings(fitFDist(v_g, df1 = df_f))
# squeezeVar (var[df == 0] is set to 0 first)
sq <- suppressWarnings(squeezeVar(v_g, df_f))
misc <- rbind(
  data.frame(what = "trigammaInverse", x = x_tri, y = y_tri),
  data.frame(what = "p.adjust.BH", x = p_bh, y = q_bh),
  data.frame(what = "fitFDist.zeros", x = f1$scale, y = f1$df2),
  data.frame(what = "fitFDist.df1vec", x = f2$scale, y = f2$df2),
  data.frame(what = "squeezeVar.prior", x = sq$var.prior, y = sq$df.prior),
  data.frame(what = "squeezeVar.post", x = v_g, y = sq$var.post))
write_table(misc, file.path(dir, "misc_r.csv"))
cat(sprintf("R %s, limma %s\n", paste(R.version$major, R.version$minor, sep = "."),
            as.character(packageVersion("limma"))))
