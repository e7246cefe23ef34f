#! /bin/sh
#***************************************
#*              start.sh               *
#***************************************

if [ "$CLP_EVENT" = "START" ] 
then 
 if [ "$CLP_DISK" = "SUCCESS" ] 
 then 
 /opt/WebOTX/bin/otxadmin start-domain admin 
  echo "NORMAL1" 
  if [ "$CLP_SERVER" = "HOME" ] 
  then 
   echo "NORMAL2" 
  else 
   echo "ON_OTHER1" 
  fi 
 else 
  echo "ERROR_DISK from START" 
 fi 
elif [ "$CLP_EVENT" = "FAILOVER" ] 
then 
 if [ "$CLP_DISK" = "SUCCESS" ] 
 then 
 /opt/WebOTX/bin/otxadmin start-domain admin 
  echo "FAILOVER1" 
  if [ "$CLP_SERVER" = "HOME" ] 
  then 
   echo "FAILOVER2" 
  else 
   echo "ON_OTHER2" 
  fi 
 else 
    : 
    : 
  echo "ERROR_DISK from FAILOVER" 
 fi 
else 
 echo "NO_CLP" 
fi 
echo "EXIT" 
exit 0 
