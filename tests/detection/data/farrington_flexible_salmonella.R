# Reference output of R surveillance::farringtonFlexible on the Salmonella Newport series
# (tests/detection/data/farrington_flexible_salmonella_r.csv), weeks of 2011 and 2012, with the
# control of issue 17. Made with R 4.2 and surveillance 1.20.3 (Debian r-cran-surveillance):
#   cd tests/detection/data && Rscript farrington_flexible_salmonella.R > out.txt
# (then add the header line date,count,upperbound,alarm and turn spaces into commas).
suppressMessages(library(surveillance))
d <- read.csv('../../../../shared/data/salmonella-newport-germany-weekly.csv')
dates <- as.Date(d$date)
s <- sts(observed=matrix(d$count,ncol=1), epoch=as.numeric(dates), epochAsDate=TRUE, frequency=52)
idx <- which(format(dates,'%Y') %in% c('2011','2012'))
ctl <- list(range=idx, b=3, w=3, alpha=0.01, weightsThreshold=2.58, pastWeeksNotIncluded=26, noPeriods=1, reweight=TRUE, trend=TRUE, thresholdMethod='delta')
r <- farringtonFlexible(s, control=ctl)
out <- data.frame(date=format(dates[idx]), count=d$count[idx], ub=round(upperbound(r)[,1],4), alarm=as.integer(alarms(r)[,1]))
write.table(out, stdout(), row.names=FALSE, col.names=FALSE, quote=FALSE)
